//! The one error type of the access crate: what is wrong with a key file or a secret, said
//! so that an operator can fix it. Secrets never appear in a message.

/// Errors loading keys and secrets.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{origin} is not a valid API-key file: {reason} (expected {{\"keys\": [{{\"key\": \"...\", \"scopes\": [\"read\", \"write\", \"admin\"], \"collections\": [\"*\"]}}]}})")]
    KeyFile { origin: String, reason: String },

    #[error("the cluster secret {reason}")]
    Secret { reason: String },
}
