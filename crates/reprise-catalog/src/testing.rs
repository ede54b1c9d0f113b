//! Catalogs for tests, on both engines: SQLite in memory, and PostgreSQL
//! in a schema of its own on the test server (`scripts/postgres.sh`, which
//! `scripts/test.sh` starts). Not for the product: nothing calls it there.

use crate::Catalog;

/// The test server's URL, from `REPRISE_TEST_POSTGRES`. `None` only when
/// `REPRISE_TEST_POSTGRES=off` says so out loud; unset, it fails the test,
/// so no PostgreSQL test is skipped silently.
pub fn postgres_url() -> Option<String> {
    match std::env::var("REPRISE_TEST_POSTGRES") {
        Ok(v) if v == "off" => {
            eprintln!("REPRISE_TEST_POSTGRES=off: the PostgreSQL half of this test does not run");
            None
        }
        Ok(v) => Some(v),
        Err(_) => panic!(
            "REPRISE_TEST_POSTGRES is not set: run the tests with scripts/test.sh \
             (it starts PostgreSQL), or set REPRISE_TEST_POSTGRES=off"
        ),
    }
}

/// A URL on the test server whose connections see only a new, empty
/// schema: a catalog of one's own. Call it outside any async runtime.
pub fn fresh_postgres_url(url: &str) -> String {
    let schema = format!("t{}", uuid::Uuid::new_v4().simple());
    let mut client = postgres::Client::connect(url, postgres::NoTls)
        .unwrap_or_else(|e| panic!("the test PostgreSQL at {url}: {e}"));
    client
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .expect("create a schema");
    let separator = if url.contains('?') { '&' } else { '?' };
    // Its connections carry the schema's name, for tests that cut them.
    format!("{url}{separator}options=-c%20search_path%3D{schema}&application_name={schema}")
}

/// One empty catalog per engine, named.
pub fn catalogs() -> Vec<(&'static str, Catalog)> {
    let mut out = vec![("sqlite", Catalog::open_in_memory().expect("sqlite"))];
    if let Some(url) = postgres_url() {
        let fresh = fresh_postgres_url(&url);
        out.push((
            "postgres",
            Catalog::connect(&fresh, "local").expect("postgres"),
        ));
    }
    out
}
