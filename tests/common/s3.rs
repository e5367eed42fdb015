//! The S3-compatible server the archive tier's tests use (s3proxy, started by
//! `scripts/s3.sh`): `HEKTOR_S3_ENDPOINT` (+ `HEKTOR_S3_BUCKET`, `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`) as `.ci/run` exports them, required under `CI=true`;
//! elsewhere started through the script, or `None` with a loud reason to skip.

use std::path::Path;

use super::is_ci;

/// The S3 server's endpoint, bucket, access key and secret.
pub struct S3 {
    pub endpoint: String,
    pub bucket: String,
    pub key: String,
    pub secret: String,
}

impl S3 {
    /// The `hektor serve` flags of an archive tier under `prefix` of the bucket.
    pub fn serve_args(&self, prefix: &str) -> Vec<String> {
        vec![
            "--archive-url".into(),
            format!("s3://{}/{prefix}", self.bucket),
            "--archive-endpoint".into(),
            self.endpoint.clone(),
            "--archive-access-key-id".into(),
            self.key.clone(),
            "--archive-secret-access-key".into(),
            self.secret.clone(),
        ]
    }
}

/// The server `test` (a name for the skip message) runs against.
pub fn server(test: &str) -> Option<S3> {
    let from_env = |endpoint: String| S3 {
        endpoint,
        bucket: std::env::var("HEKTOR_S3_BUCKET").unwrap_or_else(|_| "hektor".into()),
        key: std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_else(|_| "hektor".into()),
        secret: std::env::var("AWS_SECRET_ACCESS_KEY")
            .unwrap_or_else(|_| "hektor-test-secret".into()),
    };
    if let Ok(endpoint) = std::env::var("HEKTOR_S3_ENDPOINT") {
        return Some(from_env(endpoint));
    }
    assert!(
        !is_ci(),
        "CI=true but HEKTOR_S3_ENDPOINT is unset: .ci/run starts s3proxy with scripts/s3.sh and exports it"
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/s3.sh");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .arg("start")
        .output()
        .expect("run scripts/s3.sh");
    if !out.status.success() {
        eprintln!(
            "SKIPPED {test}: no S3 server (HEKTOR_S3_ENDPOINT unset and scripts/s3.sh start failed: {})",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let endpoint = stdout
        .lines()
        .find_map(|l| l.strip_prefix("HEKTOR_S3_ENDPOINT="))
        .expect("scripts/s3.sh start prints HEKTOR_S3_ENDPOINT")
        .to_owned();
    Some(S3 {
        endpoint,
        bucket: "hektor".into(),
        key: "hektor".into(),
        secret: "hektor-test-secret".into(),
    })
}
