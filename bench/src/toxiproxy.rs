//! A client of Toxiproxy's HTTP API (<https://github.com/Shopify/toxiproxy>), and a
//! `toxiproxy-server` process of a bench's own: what `hektor-bench faults` cuts links
//! with. A proxy listens on a 127.0.0.1 port and forwards to an upstream; toxics on it
//! stall, reset or refuse the traffic ([`Cut`]) until they are removed.
//!
//! The server binary comes from `scripts/toxiproxy.sh install` (`go install` into the
//! repo's `.toxiproxy/bin`); [`Toxiproxy::start`] runs it on a free port and kills it
//! when dropped, so every proxy a bench made goes with it.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use serde_json::{json, Value};

/// How a link is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// A black hole: the connections stay open and every byte either way is dropped
    /// (Toxiproxy's `timeout` toxic with timeout 0), so callers wait for their own
    /// timeouts, as behind a switch that drops packets. Healing closes the connections
    /// that went through the cut (the toxic's cleanup), and new ones work.
    Blackhole,
    /// Every connection is reset by peer as soon as data flows (`reset_peer`).
    Reset,
    /// The proxy is disabled: connections are refused, open ones closed.
    Refuse,
    /// Not a cut: a slow link, 1 s (± 0.5 s) of latency on every chunk either way
    /// (`latency`).
    Slow,
}

impl Cut {
    pub fn parse(name: &str) -> anyhow::Result<Cut> {
        match name {
            "blackhole" => Ok(Cut::Blackhole),
            "reset" => Ok(Cut::Reset),
            "refuse" => Ok(Cut::Refuse),
            "slow" => Ok(Cut::Slow),
            other => anyhow::bail!("unknown cut `{other}`: use blackhole, reset, refuse or slow"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Cut::Blackhole => "blackhole",
            Cut::Reset => "reset",
            Cut::Refuse => "refuse",
            Cut::Slow => "slow",
        }
    }
}

/// The server process of [`Toxiproxy::start`], killed when dropped.
struct ServerProc(Child);

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A Toxiproxy server, through its HTTP API.
pub struct Toxiproxy {
    http: reqwest::Client,
    /// `http://127.0.0.1:PORT`.
    pub api: String,
    /// The proxies made through this handle (deleted by [`Toxiproxy::delete_all`]).
    made: parking_lot::Mutex<Vec<String>>,
    _server: Option<ServerProc>,
}

impl Toxiproxy {
    fn client() -> anyhow::Result<reqwest::Client> {
        Ok(reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(2))
            .build()?)
    }

    /// A server someone else runs, at `api` (`http://HOST:PORT`).
    pub async fn connect(api: &str) -> anyhow::Result<Toxiproxy> {
        let proxy = Toxiproxy {
            http: Self::client()?,
            api: api.trim_end_matches('/').to_owned(),
            made: Default::default(),
            _server: None,
        };
        proxy.version().await.with_context(|| {
            format!("no Toxiproxy server answers at {api} (start one with `bash scripts/toxiproxy.sh start`)")
        })?;
        Ok(proxy)
    }

    /// A server of our own on a free 127.0.0.1 port: the binary that `script install`
    /// prints (it installs it with `go install` when missing).
    pub async fn start(script: &Path) -> anyhow::Result<Toxiproxy> {
        anyhow::ensure!(
            script.exists(),
            "the network scenarios need Toxiproxy, installed by {} (--toxiproxy-script), which is missing",
            script.display()
        );
        let install = tokio::process::Command::new("bash")
            .arg(script)
            .arg("install")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(600), install)
            .await
            .context("installing Toxiproxy took over 600 s")??;
        anyhow::ensure!(
            out.status.success(),
            "`{} install` failed ({}): {}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let binary = String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .map(|l| l.trim().to_owned())
            .filter(|l| !l.is_empty())
            .context("`toxiproxy.sh install` printed no path")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new(&binary)
            .args(["-host", "127.0.0.1", "-port", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {binary}"))?;
        let mut proxy = Toxiproxy {
            http: Self::client()?,
            api: format!("http://127.0.0.1:{port}"),
            made: Default::default(),
            _server: Some(ServerProc(child)),
        };
        for _ in 0..100 {
            if proxy.version().await.is_ok() {
                return Ok(proxy);
            }
            if let Some(ServerProc(child)) = proxy._server.as_mut() {
                if let Some(status) = child.try_wait()? {
                    anyhow::bail!("{binary} exited at start ({status})");
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::bail!("{binary} did not answer on {} within 10 s", proxy.api)
    }

    pub async fn version(&self) -> anyhow::Result<String> {
        let r = self
            .http
            .get(format!("{}/version", self.api))
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "GET /version: {}", r.status());
        Ok(r.text().await?)
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.api));
        if let Some(body) = &body {
            request = request.json(body);
        }
        let r = request
            .send()
            .await
            .with_context(|| format!("Toxiproxy {method} {path}"))?;
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        anyhow::ensure!(
            status.is_success(),
            "Toxiproxy {method} {path} {}: {status} {text}",
            body.map(|b| b.to_string()).unwrap_or_default()
        );
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// A proxy `name` listening on `listen` (`127.0.0.1:PORT`; port 0 for any) and
    /// forwarding to `upstream`: returns the address it listens on. One of that name
    /// already there is replaced.
    pub async fn create(&self, name: &str, listen: &str, upstream: &str) -> anyhow::Result<String> {
        let _ = self.delete(name).await;
        let made = self
            .call(
                reqwest::Method::POST,
                "/proxies",
                Some(
                    json!({"name": name, "listen": listen, "upstream": upstream, "enabled": true}),
                ),
            )
            .await?;
        self.made.lock().push(name.to_owned());
        made["listen"].as_str().map(str::to_owned).with_context(|| {
            format!("Toxiproxy made proxy {name} without a listen address: {made}")
        })
    }

    pub async fn delete(&self, name: &str) -> anyhow::Result<()> {
        self.made.lock().retain(|n| n != name);
        self.call(reqwest::Method::DELETE, &format!("/proxies/{name}"), None)
            .await
            .map(|_| ())
    }

    /// Delete every proxy made through this handle.
    pub async fn delete_all(&self) {
        let names = std::mem::take(&mut *self.made.lock());
        for name in names {
            let _ = self.delete(&name).await;
        }
    }

    /// Cut proxy `name` both ways.
    pub async fn cut(&self, name: &str, how: Cut) -> anyhow::Result<()> {
        let toxic = match how {
            Cut::Refuse => {
                self.call(
                    reqwest::Method::POST,
                    &format!("/proxies/{name}"),
                    Some(json!({"enabled": false})),
                )
                .await?;
                return Ok(());
            }
            Cut::Blackhole => ("timeout", json!({"timeout": 0})),
            Cut::Reset => ("reset_peer", json!({"timeout": 0})),
            Cut::Slow => ("latency", json!({"latency": 1000, "jitter": 500})),
        };
        for stream in ["upstream", "downstream"] {
            self.call(
                reqwest::Method::POST,
                &format!("/proxies/{name}/toxics"),
                Some(json!({"name": format!("cut-{stream}"), "type": toxic.0,
                    "stream": stream, "toxicity": 1.0, "attributes": toxic.1})),
            )
            .await?;
        }
        Ok(())
    }

    /// Undo [`Toxiproxy::cut`].
    pub async fn heal(&self, name: &str, how: Cut) -> anyhow::Result<()> {
        match how {
            Cut::Refuse => {
                self.call(
                    reqwest::Method::POST,
                    &format!("/proxies/{name}"),
                    Some(json!({"enabled": true})),
                )
                .await?;
            }
            Cut::Blackhole | Cut::Reset | Cut::Slow => {
                for stream in ["upstream", "downstream"] {
                    self.call(
                        reqwest::Method::DELETE,
                        &format!("/proxies/{name}/toxics/cut-{stream}"),
                        None,
                    )
                    .await?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_parse_and_name_themselves() {
        for cut in [Cut::Blackhole, Cut::Reset, Cut::Refuse, Cut::Slow] {
            assert_eq!(Cut::parse(cut.name()).unwrap(), cut);
        }
        assert!(Cut::parse("netem").is_err());
    }
}
