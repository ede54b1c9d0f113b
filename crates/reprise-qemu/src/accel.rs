//! KVM or TCG. `auto` takes KVM only where it runs a Linux guest: a usable
//! `/dev/kvm` that is not the software `kvm-pvm` module (under which QEMU
//! opens `/dev/kvm` but a guest kernel fails), and TCG everywhere else.

use reprise_core::{Error, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AccelSetting {
    #[default]
    Auto,
    Kvm,
    Tcg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// What the host offers, read once by [`HostFacts::probe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostFacts {
    /// `/dev/kvm` exists and opens read-write.
    pub kvm_usable: bool,
    /// `/sys/module/kvm_pvm` exists: KVM is software nested virtualisation.
    pub kvm_is_pvm: bool,
}

impl HostFacts {
    pub fn probe() -> HostFacts {
        HostFacts {
            kvm_usable: std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/kvm")
                .is_ok(),
            kvm_is_pvm: std::path::Path::new("/sys/module/kvm_pvm").exists(),
        }
    }
}

/// The accelerator to run with, or an error naming why KVM was asked for
/// and cannot be had.
pub fn choose(setting: AccelSetting, host: HostFacts) -> Result<Accel> {
    match setting {
        AccelSetting::Tcg => Ok(Accel::Tcg),
        AccelSetting::Auto if host.kvm_usable && !host.kvm_is_pvm => Ok(Accel::Kvm),
        AccelSetting::Auto => Ok(Accel::Tcg),
        AccelSetting::Kvm if host.kvm_usable => Ok(Accel::Kvm),
        AccelSetting::Kvm => Err(Error::unavailable(
            "kvm_unavailable",
            "accel = \"kvm\" is configured but /dev/kvm is missing or cannot be opened \
             read-write; set accel = \"auto\" or \"tcg\", or load the kvm module",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REAL: HostFacts = HostFacts {
        kvm_usable: true,
        kvm_is_pvm: false,
    };
    const PVM: HostFacts = HostFacts {
        kvm_usable: true,
        kvm_is_pvm: true,
    };
    const NONE: HostFacts = HostFacts {
        kvm_usable: false,
        kvm_is_pvm: false,
    };

    #[test]
    fn auto_takes_real_kvm_only() {
        assert_eq!(choose(AccelSetting::Auto, REAL).unwrap(), Accel::Kvm);
        assert_eq!(choose(AccelSetting::Auto, PVM).unwrap(), Accel::Tcg);
        assert_eq!(choose(AccelSetting::Auto, NONE).unwrap(), Accel::Tcg);
    }

    #[test]
    fn explicit_settings() {
        assert_eq!(choose(AccelSetting::Tcg, REAL).unwrap(), Accel::Tcg);
        assert_eq!(choose(AccelSetting::Kvm, PVM).unwrap(), Accel::Kvm);
        let err = choose(AccelSetting::Kvm, NONE).unwrap_err();
        assert_eq!(err.code, "kvm_unavailable");
        assert!(err.message.contains("/dev/kvm"));
    }
}
