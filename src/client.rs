//! The HTTP client of the commands that talk to a running node (`produce`, `cluster`,
//! `shard`): it sends the API key (`--api-key`, or `HEKTOR_API_KEY`) on every request
//! and, for an `https://` node, trusts the CA in `HEKTOR_TLS_CA` (a PEM file).

use anyhow::Context;

/// A client that sends `Authorization: Bearer <key>` when a key is given.
pub fn http_client(api_key: Option<&str>) -> anyhow::Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(key) = api_key {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {key}"))
            .context("the API key has a character an HTTP header cannot carry")?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    let mut builder = reqwest::Client::builder().default_headers(headers);
    if let Some(ca) = std::env::var_os("HEKTOR_TLS_CA") {
        for cert in crate::tls::trusted(std::path::Path::new(&ca))? {
            builder = builder.add_root_certificate(cert);
        }
    }
    Ok(builder.build()?)
}
