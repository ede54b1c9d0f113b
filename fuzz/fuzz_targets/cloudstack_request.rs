//! A CloudStack request as a client sends it: its query string parsed as
//! the daemon parses it, the string to sign built in each variant, and the
//! signature and expiry checked against a fixed secret. Any input must end
//! in a value or a named error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use reprise_cloudstack::sign::{self, Expiry, Variant};

fuzz_target!(|data: &[u8]| {
    let params: Vec<(String, String)> = form_urlencoded::parse(data)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    for variant in Variant::ALL {
        let text = sign::signed_string(&params, variant);
        let _ = sign::sign(&text, "secret");
    }
    let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).expect("a time");
    for required in [false, true] {
        let expiry = Expiry {
            max_ahead: chrono::Duration::seconds(3600),
            required,
        };
        let _ = sign::verify(&params, "secret", now, expiry);
    }
});
