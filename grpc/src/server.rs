//! The gRPC listener: the `hektor.v1.Hektor` service as a tower `Service` routing each
//! method path to its [`Api`] method through tonic's unary machinery and the prost codec
//! (what `tonic-build` would generate, written out: no protoc, no build script), served
//! over plain TCP by tonic's HTTP/2 server.
//!
//! Limits: a request message past its method's size ([`SEARCH_MESSAGE_BYTES`] for
//! `Search` and `SearchBatch`, [`WRITE_MESSAGE_BYTES`] for `Write`, the HTTP API's body
//! limits) is `OUT_OF_RANGE` (tonic's code for it) before it is decoded; a message that does not decode
//! is `INVALID_ARGUMENT` naming it (prost's codec would say `INTERNAL`); an unknown method is `UNIMPLEMENTED`; a call running past `request_timeout` is cancelled;
//! at most `max_concurrent_requests` calls run at once (the rest are
//! `RESOURCE_EXHAUSTED`). Each refusal ends its own call only.

use std::convert::Infallible;
use std::future::Future;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tonic::body::Body;
use tonic::codec::{Codec, DecodeBuf, Decoder};
use tonic::server::NamedService;
use tonic::{Request, Response, Status};

use crate::proto as pb;
use crate::service::Api;
use crate::GrpcError;

/// Largest `Search` or `SearchBatch` message accepted (the HTTP search routes' 2 MiB).
pub const SEARCH_MESSAGE_BYTES: usize = 2 * 1024 * 1024;
/// Largest `Write` message accepted (the HTTP write route's 64 MiB).
pub const WRITE_MESSAGE_BYTES: usize = hektor_ingest::validate::MAX_BODY_BYTES;

/// The listener's settings.
#[derive(Debug, Clone)]
pub struct GrpcConfig {
    /// Calls running at once (as `--max-concurrent-requests`).
    pub max_concurrent_requests: usize,
    /// How long one call may run (as `--request-timeout-ms`).
    pub request_timeout: Duration,
}

/// The `hektor.v1.Hektor` service. Cheap to clone.
#[derive(Clone)]
pub struct HektorService {
    api: Arc<Api>,
}

impl HektorService {
    pub fn new(api: Arc<Api>) -> HektorService {
        HektorService { api }
    }
}

impl NamedService for HektorService {
    const NAME: &'static str = pb::SERVICE;
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<B> tower::Service<http::Request<B>> for HektorService
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let api = Arc::clone(&self.api);
        match request.uri().path() {
            pb::SEARCH_PATH => Box::pin(unary(request, SEARCH_MESSAGE_BYTES, move |r| {
                let api = Arc::clone(&api);
                async move { api.search(r).await }
            })),
            pb::SEARCH_BATCH_PATH => Box::pin(unary(request, SEARCH_MESSAGE_BYTES, move |r| {
                let api = Arc::clone(&api);
                async move { api.search_batch(r).await }
            })),
            pb::WRITE_PATH => Box::pin(unary(request, WRITE_MESSAGE_BYTES, move |r| {
                let api = Arc::clone(&api);
                async move { api.write(r).await }
            })),
            other => {
                let status = Status::unimplemented(format!(
                    "no method {other} here: {} serves Search, SearchBatch and Write",
                    pb::SERVICE
                ));
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}

/// One unary call: decode (at most `limit` bytes), run `handler`, encode.
async fn unary<B, In, Out, F, Fut>(
    request: http::Request<B>,
    limit: usize,
    handler: F,
) -> Result<http::Response<Body>, Infallible>
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
    In: prost::Message + Default + Send + 'static,
    Out: prost::Message + Send + 'static,
    F: FnMut(Request<In>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Response<Out>, Status>> + Send + 'static,
{
    let codec = RequestCodec::<Out, In>(PhantomData);
    let mut grpc = tonic::server::Grpc::new(codec)
        .max_decoding_message_size(limit)
        .max_encoding_message_size(usize::MAX);
    Ok(grpc.unary(tower::service_fn(handler), request).await)
}

/// The prost codec, but a request that does not decode is the caller's mistake:
/// `INVALID_ARGUMENT` naming the message, not prost's `INTERNAL`.
struct RequestCodec<Out, In>(PhantomData<(Out, In)>);

impl<Out, In> Codec for RequestCodec<Out, In>
where
    Out: prost::Message + Send + 'static,
    In: prost::Message + Default + Send + 'static,
{
    type Encode = Out;
    type Decode = In;
    type Encoder = tonic_prost::ProstEncoder<Out>;
    type Decoder = RequestDecoder<In>;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstCodec::<Out, In>::default().encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        RequestDecoder(PhantomData)
    }
}

/// Decodes a request message; see [`RequestCodec`].
struct RequestDecoder<In>(PhantomData<In>);

impl<In: prost::Message + Default> Decoder for RequestDecoder<In> {
    type Item = In;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<In>, Status> {
        In::decode(buf).map(Some).map_err(|err| {
            let name = std::any::type_name::<In>()
                .rsplit("::")
                .next()
                .unwrap_or("");
            crate::error::status_with_http(
                tonic::Code::InvalidArgument,
                format!("the request is not a valid hektor.v1.{name} message: {err}"),
                400,
            )
        })
    }
}

/// Serve `api` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    api: Arc<Api>,
    config: GrpcConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), GrpcError> {
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .timeout(config.request_timeout)
        .max_concurrent_streams(Some(
            config.max_concurrent_requests.clamp(1, u32::MAX as usize) as u32,
        ))
        .serve_with_incoming_shutdown(HektorService::new(api), incoming, shutdown)
        .await?;
    Ok(())
}

/// Bind `addr` for [`serve`] (the address actually bound, for port 0, is the listener's).
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}
