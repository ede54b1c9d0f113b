//! Signatures made by the real clients: each vector was signed by `cs`
//! 5.2.0 (`CloudStack._sign`) and Apache Libcloud 3.9.1
//! (`CloudStackConnection._make_signature`), and one by Java's encoding
//! (`~` as `%7E`), with the secret below. Each must verify, and fail with
//! any other secret or any changed value.

use chrono::Utc;
use reprise_cloudstack::sign::{self, Expiry, SignatureError};

/// The check as the daemon makes it by default, its outcome only.
fn verify(
    params: &[(String, String)],
    secret: &str,
    now: chrono::DateTime<Utc>,
) -> Result<(), SignatureError> {
    let expiry = Expiry {
        max_ahead: chrono::Duration::hours(1),
        required: false,
    };
    sign::verify(params, secret, now, expiry).map(|_| ())
}

const SECRET: &str = "Zx9-secret_KEY/+==";

fn params(pairs: &[(&str, &str)], signature: &str) -> Vec<(String, String)> {
    let mut p: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    p.push(("signature".into(), signature.into()));
    p
}

/// Parameters, and their signature by `cs` and by Libcloud.
type Vector = (
    Vec<(&'static str, &'static str)>,
    &'static str,
    &'static str,
);

fn vectors() -> Vec<Vector> {
    vec![
        (
            vec![
                ("command", "listZones"),
                ("apiKey", "AK1"),
                ("response", "json"),
            ],
            "R/rCdiGBxkdsblYhlGIU3k9Hy1U=",
            "R/rCdiGBxkdsblYhlGIU3k9Hy1U=",
        ),
        (
            vec![
                ("command", "createSnapshot"),
                ("apiKey", "AK1"),
                ("response", "json"),
                ("volumeid", "0b4c8a36-7c1e-4f4b-9d1e-2a1f0e9c3b11"),
                ("name", "nightly copy"),
            ],
            "8KnGodHdjmKXEY09z3O08kRrAB8=",
            "8KnGodHdjmKXEY09z3O08kRrAB8=",
        ),
        (
            vec![
                ("command", "listVolumes"),
                ("apiKey", "AK1"),
                ("response", "json"),
                ("keyword", "a*b~c+d/e"),
            ],
            "/ADAvglTTXDrgvKYZAEXgAJ2l7E=",
            "/ADAvglTTXDrgvKYZAEXgAJ2l7E=",
        ),
        (
            vec![
                ("command", "createTags"),
                ("apiKey", "AK1"),
                ("response", "json"),
                ("tags[0].key", "env"),
                ("tags[0].value", "prod ü ☃"),
                ("resourceids", "x,y"),
            ],
            "e6Fe5Ge3abdmD21+MW/pJPEFREc=",
            "e6Fe5Ge3abdmD21+MW/pJPEFREc=",
        ),
        (
            vec![
                ("command", "deployVirtualMachine"),
                ("apiKey", "AK1"),
                ("response", "json"),
                ("details[0].append", "console=ttyS0 quiet"),
                ("Zed", "Up"),
            ],
            "QGFGBN0oK3J2JqjVUA60wDnBNGQ=",
            "acIutIX+DgEdKQTcyF8Kxk4CWAs=",
        ),
    ]
}

#[test]
fn what_the_real_clients_sign_verifies() {
    let now = Utc::now();
    for (pairs, cs, libcloud) in vectors() {
        for sig in [cs, libcloud] {
            assert_eq!(
                verify(&params(&pairs, sig), SECRET, now),
                Ok(()),
                "{pairs:?} {sig}"
            );
            // A `+` sent unescaped in a query string arrives as a space.
            let spaced = sig.replace('+', " ");
            assert_eq!(
                verify(&params(&pairs, &spaced), SECRET, now),
                Ok(()),
                "{pairs:?}"
            );
            assert_eq!(
                verify(&params(&pairs, sig), "another secret", now),
                Err(SignatureError::Mismatch)
            );
            let mut changed = params(&pairs, sig);
            changed[0].1.push('x');
            assert_eq!(verify(&changed, SECRET, now), Err(SignatureError::Mismatch));
        }
    }
}

#[test]
fn java_encoding_of_tilde_verifies_too() {
    let pairs = [
        ("command", "listVolumes"),
        ("apiKey", "AK1"),
        ("response", "json"),
        ("keyword", "a*b~c+d/e"),
    ];
    assert_eq!(
        verify(
            &params(&pairs, "R7tZ8KN/N9TNMzWIgZq7huoMK+g="),
            SECRET,
            Utc::now()
        ),
        Ok(())
    );
}
