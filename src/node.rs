//! `hektor node --config FILE`: run one cluster node from a TOML file.
//!
//! Every key of the file is a `hektor serve` setting, spelled as its flag without the
//! dashes (`node_id` or `node-id`); arrays are lists (`roles = ["router", "data"]`),
//! `true` turns a switch on. Flags given after `--config` override the file. For example:
//!
//! ```toml
//! node_id = "n2"
//! listen = "127.0.0.1:7702"
//! brokers = "127.0.0.1:9092"
//! data_dir = "/var/lib/hektor/n2"
//! region = "eu-west-1a"        # the failure domain replicas are spread over
//! roles = ["router", "data", "controller"]
//! node_capacity = 2.0          # twice a standard node's share of shards
//! dead_after_ms = 10000
//! kafka_config = "/etc/hektor/kafka.properties"  # TLS and SASL/SCRAM settings, secrets
//!
//! [kafka]                      # librdkafka properties, each a --kafka-option KEY=VALUE
//! "security.protocol" = "SASL_SSL"
//! ```
//!
//! This module owns only the translation of the file into flags; the node itself is
//! [`crate::serve`].

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::serve::ServeArgs;

#[derive(Debug, Clone, clap::Args)]
pub struct NodeArgs {
    /// The node's settings (TOML; keys are `hektor serve` flags).
    #[arg(long)]
    pub config: PathBuf,
    /// Further `hektor serve` flags, overriding the file.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub overrides: Vec<String>,
}

/// The flags a config file stands for.
pub fn flags_of(text: &str, origin: &Path) -> anyhow::Result<Vec<OsString>> {
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("{} is not valid TOML", origin.display()))?;
    let mut flags = Vec::new();
    for (key, value) in table {
        let flag = format!("--{}", key.replace('_', "-"));
        let scalar = |v: &toml::Value| -> anyhow::Result<String> {
            Ok(match v {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                other => anyhow::bail!(
                    "{}: `{key}` must be a string, number, boolean or list, not {}",
                    origin.display(),
                    other.type_str()
                ),
            })
        };
        match &value {
            toml::Value::Table(props) if key == "kafka" => {
                for (k, v) in props {
                    flags.push("--kafka-option".into());
                    flags.push(format!("{k}={}", scalar(v)?).into());
                }
            }
            toml::Value::Boolean(true) => flags.push(flag.into()),
            toml::Value::Boolean(false) => {}
            toml::Value::Array(items) => {
                let items: Vec<String> = items.iter().map(scalar).collect::<anyhow::Result<_>>()?;
                flags.push(flag.into());
                flags.push(items.join(",").into());
            }
            other => {
                flags.push(flag.into());
                flags.push(scalar(other)?.into());
            }
        }
    }
    Ok(flags)
}

/// Parse the file (and the overrides) into the node's settings.
pub fn settings(args: &NodeArgs) -> anyhow::Result<ServeArgs> {
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("reading {}", args.config.display()))?;
    let mut flags = flags_of(&text, &args.config)?;
    flags.extend(args.overrides.iter().map(OsString::from));
    ServeArgs::from_flags(flags).with_context(|| {
        format!(
            "{}: a key is not a `hektor serve` setting or has a bad value (keys are the \
             flags of `hektor serve --help`, without the dashes)",
            args.config.display()
        )
    })
}

pub async fn run(args: NodeArgs) -> anyhow::Result<()> {
    crate::serve::run(settings(&args)?).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_keys_become_serve_settings() {
        let text = r#"
            node_id = "n2"
            listen = "127.0.0.1:7702"
            roles = ["router", "data"]
            node-capacity = 2.5
            dead_after_ms = 3000
            no_planner = true

            [kafka]
            "security.protocol" = "SASL_SSL"
            "sasl.mechanisms" = "SCRAM-SHA-512"
        "#;
        let flags = flags_of(text, Path::new("n2.toml")).unwrap();
        let args = ServeArgs::from_flags(flags).unwrap();
        assert_eq!(args.node_id, "n2");
        assert_eq!(args.listen.port(), 7702);
        assert_eq!(args.roles, ["router", "data"]);
        assert_eq!(args.node_capacity, 2.5);
        assert_eq!(args.dead_after_ms, 3000);
        assert!(args.no_planner);
        assert_eq!(
            args.log.kafka_options,
            [
                "sasl.mechanisms=SCRAM-SHA-512",
                "security.protocol=SASL_SSL"
            ]
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        let p = Path::new("x.toml");
        assert!(ServeArgs::from_flags(flags_of("no_such_key = 1", p).unwrap()).is_err());
        assert!(ServeArgs::from_flags(flags_of("heartbeat_ms = \"soon\"", p).unwrap()).is_err());
        assert!(flags_of("[table]\na = 1", p).is_err());
        assert!(flags_of("not toml", p).is_err());
    }
}
