//! A small client of the `hektor.v1.Hektor` service (for the bench, the tests and Rust
//! callers): one HTTP/2 connection, the API key sent as `authorization: Bearer <key>`
//! metadata on every call. [`Client::connect`] uses tonic's `Channel` (reconnects, a
//! buffer task between caller and connection); [`Client::connect_lean`] drives one
//! hyper HTTP/2 connection directly (no buffer hop, no reconnect), which is what the
//! bench's load generator uses so that the clients take as little of the machine's CPU
//! as its REST clients do.

use http::uri::PathAndQuery;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

use crate::proto as pb;
use crate::GrpcError;

/// Largest answer the client decodes (a batch of 10,000 queries' hits with payloads).
const MAX_ANSWER_BYTES: usize = 256 * 1024 * 1024;

/// A connection to a node's gRPC listener. Cheap to clone (clones share the connection).
#[derive(Clone)]
pub struct Client {
    grpc: tonic::client::Grpc<Conn>,
    authorization: Option<MetadataValue<Ascii>>,
}

/// The connection under a [`Client`].
#[derive(Clone)]
enum Conn {
    Channel(Channel),
    Lean(hyper::client::conn::http2::SendRequest<tonic::body::Body>),
}

type ConnFuture = std::pin::Pin<
    Box<
        dyn std::future::Future<Output = Result<http::Response<Incoming>, BoxError>>
            + Send
            + 'static,
    >,
>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Incoming = http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, BoxError>;

impl tower::Service<http::Request<tonic::body::Body>> for Conn {
    type Response = http::Response<Incoming>;
    type Error = BoxError;
    type Future = ConnFuture;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        match self {
            Conn::Channel(c) => tower::Service::poll_ready(c, cx).map_err(Into::into),
            Conn::Lean(s) => s.poll_ready(cx).map_err(Into::into),
        }
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> ConnFuture {
        use http_body_util::BodyExt;
        match self {
            Conn::Channel(c) => {
                let call = tower::Service::call(c, request);
                Box::pin(async move {
                    let response = call.await?;
                    Ok(response.map(|b| b.map_err(BoxError::from).boxed_unsync()))
                })
            }
            Conn::Lean(s) => {
                let call = s.send_request(request);
                Box::pin(async move {
                    let response = call.await?;
                    Ok(response.map(|b| b.map_err(BoxError::from).boxed_unsync()))
                })
            }
        }
    }
}

impl Client {
    /// Connect to `addr` (`host:port`, or a `http://host:port` URI).
    pub async fn connect(addr: &str) -> Result<Client, GrpcError> {
        let uri = if addr.contains("://") {
            addr.to_owned()
        } else {
            format!("http://{addr}")
        };
        let endpoint = Endpoint::from_shared(uri.clone())
            .map_err(|source| GrpcError::Connect {
                addr: uri.clone(),
                source,
            })?
            .tcp_nodelay(true);
        let channel = endpoint
            .connect()
            .await
            .map_err(|source| GrpcError::Connect { addr: uri, source })?;
        Ok(Client {
            grpc: tonic::client::Grpc::new(Conn::Channel(channel))
                .max_decoding_message_size(MAX_ANSWER_BYTES),
            authorization: None,
        })
    }

    /// Connect to `addr` over one bare hyper HTTP/2 connection (see the module's doc).
    pub async fn connect_lean(addr: std::net::SocketAddr) -> Result<Client, GrpcError> {
        let failed = |e: String| GrpcError::BadRequest(format!("connecting to {addr}: {e}"));
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| failed(e.to_string()))?;
        stream
            .set_nodelay(true)
            .map_err(|e| failed(e.to_string()))?;
        let (sender, connection) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .map_err(|e| failed(e.to_string()))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let origin: http::Uri = format!("http://{addr}")
            .parse()
            .map_err(|e: http::uri::InvalidUri| failed(e.to_string()))?;
        Ok(Client {
            grpc: tonic::client::Grpc::with_origin(Conn::Lean(sender), origin)
                .max_decoding_message_size(MAX_ANSWER_BYTES),
            authorization: None,
        })
    }

    /// Send `key` as `authorization: Bearer <key>` on every call.
    pub fn with_key(mut self, key: &str) -> Result<Client, GrpcError> {
        let value = format!("Bearer {key}")
            .parse()
            .map_err(|_| GrpcError::BadRequest("an API key must be printable ASCII".into()))?;
        self.authorization = Some(value);
        Ok(self)
    }

    /// One unary call of `path` (`/hektor.v1.Hektor/<Method>`) with any message.
    pub async fn unary<In, Out>(&mut self, path: &'static str, message: In) -> Result<Out, Status>
    where
        In: prost::Message + Send + Sync + 'static,
        Out: prost::Message + Default + Send + Sync + 'static,
    {
        let mut request = Request::new(message);
        if let Some(value) = &self.authorization {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        self.grpc
            .ready()
            .await
            .map_err(|e| Status::unavailable(format!("the gRPC connection is not ready: {e}")))?;
        let codec = tonic_prost::ProstCodec::<In, Out>::default();
        let response = self
            .grpc
            .unary(request, PathAndQuery::from_static(path), codec)
            .await?;
        Ok(response.into_inner())
    }

    /// `Search`: the k nearest vectors to one query.
    pub async fn search(
        &mut self,
        request: pb::SearchRequest,
    ) -> Result<pb::SearchResponse, Status> {
        self.unary(pb::SEARCH_PATH, request).await
    }

    /// `SearchBatch`: exact top k for many queries.
    pub async fn search_batch(
        &mut self,
        request: pb::BatchSearchRequest,
    ) -> Result<pb::BatchSearchResponse, Status> {
        self.unary(pb::SEARCH_BATCH_PATH, request).await
    }

    /// `Write`: upserts and deletes, answered once durable.
    pub async fn write(&mut self, request: pb::WriteRequest) -> Result<pb::WriteResponse, Status> {
        self.unary(pb::WRITE_PATH, request).await
    }
}
