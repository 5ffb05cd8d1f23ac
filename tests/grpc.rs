//! gRPC end to end: a tonic client behind `BearerAuthLayer` calls a tonic server on 127.0.0.1
//! whose auth interceptor answers `UNAUTHENTICATED` to missing, unknown, revoked and expired
//! tokens. Tokens come from the embedded authorization server, in memory.
//!
//! The service is written by hand (prost messages, `tonic::server::Grpc`), so no `.proto` file
//! or protoc is needed. It needs the crate's `tonic` feature (`ReplayBody` for
//! `tonic::body::Body`):
//!
//! ```text
//! cargo test --all-features --test grpc
//! ```

mod common;

use std::convert::Infallible;

use http::uri::PathAndQuery;
use tokio::{net::TcpListener, sync::mpsc, sync::watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{
    Code, Request, Response, Status, Streaming,
    body::Body,
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Channel, Server, server::TcpIncoming},
};
use tonic_prost::ProstCodec;
use tower::{ServiceBuilder, service_fn};
use tower_client_credentials::{BearerAuth, BearerAuthLayer};
use tower_client_credentials_testkit::{MockAuthServer, TokenRegistry};

use common::builder;

const PUT: &str = "/test.Files/Put";
const UPLOAD: &str = "/test.Files/Upload";
/// The replay limit of the layer in the tests of large bodies.
const LIMIT: usize = 1024;

/// A piece of data: the request of `Put`, and each message of `Upload`.
#[derive(Clone, PartialEq, prost::Message)]
struct Chunk {
    #[prost(bytes = "vec", tag = "1")]
    data: Vec<u8>,
}

/// What the server received, and with which token.
#[derive(Clone, PartialEq, prost::Message)]
struct Receipt {
    #[prost(uint64, tag = "1")]
    messages: u64,
    #[prost(uint64, tag = "2")]
    bytes: u64,
    /// The `jti` of the token the interceptor accepted.
    #[prost(string, tag = "3")]
    jti: String,
}

fn chunk(data: &[u8]) -> Chunk {
    Chunk {
        data: data.to_vec(),
    }
}

// ---------------------------------------------------------------------------------------------
// The server: `test.Files` with a unary `Put` and a client-streaming `Upload`, behind an auth
// interceptor.

/// The calls that reached the server's interceptor, and how many it refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Seen {
    calls: u64,
    refused: u64,
}

/// The `jti` of the accepted token, passed from the interceptor to the handlers.
#[derive(Clone)]
struct Jti(String);

/// Lets through calls with a live token from `registry`; refuses the others with
/// `UNAUTHENTICATED`, as a real server's auth interceptor would.
#[derive(Clone)]
struct CheckToken {
    registry: TokenRegistry,
    seen: watch::Sender<Seen>,
}

impl CheckToken {
    fn check(&self, request: &Request<()>) -> Result<String, Status> {
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .ok_or_else(|| Status::unauthenticated("missing bearer token"))?;
        let issued = self
            .registry
            .get(token)
            .ok_or_else(|| Status::unauthenticated("unknown token"))?;
        if issued.revoked {
            return Err(Status::unauthenticated("token revoked"));
        }
        if issued.is_expired() {
            return Err(Status::unauthenticated("token expired"));
        }
        Ok(issued.jti)
    }
}

impl Interceptor for CheckToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let verdict = self.check(&request);
        self.seen.send_modify(|seen| {
            seen.calls += 1;
            seen.refused += u64::from(verdict.is_err());
        });
        request.extensions_mut().insert(Jti(verdict?));
        Ok(request)
    }
}

fn accepted_jti<T>(request: &Request<T>) -> String {
    request
        .extensions()
        .get::<Jti>()
        .map(|jti| jti.0.clone())
        .unwrap_or_default()
}

/// The `test.Files` service, routed by hand as generated code would.
async fn files(request: http::Request<Body>) -> Result<http::Response<Body>, Infallible> {
    let mut grpc = tonic::server::Grpc::new(ProstCodec::<Receipt, Chunk>::default());
    Ok(match request.uri().path() {
        PUT => grpc.unary(service_fn(put_one), request).await,
        UPLOAD => grpc.client_streaming(service_fn(upload), request).await,
        _ => Status::unimplemented("no such method").into_http(),
    })
}

async fn put_one(request: Request<Chunk>) -> Result<Response<Receipt>, Status> {
    let jti = accepted_jti(&request);
    let chunk = request.into_inner();
    Ok(Response::new(Receipt {
        messages: 1,
        bytes: chunk.data.len() as u64,
        jti,
    }))
}

async fn upload(request: Request<Streaming<Chunk>>) -> Result<Response<Receipt>, Status> {
    let mut receipt = Receipt {
        jti: accepted_jti(&request),
        ..Receipt::default()
    };
    let mut messages = request.into_inner();
    while let Some(chunk) = messages.message().await? {
        receipt.messages += 1;
        receipt.bytes += chunk.data.len() as u64;
    }
    Ok(Response::new(receipt))
}

/// The gRPC server on 127.0.0.1, checking tokens from `auth`.
struct GrpcServer {
    url: String,
    seen: watch::Sender<Seen>,
}

impl GrpcServer {
    async fn start(auth: &MockAuthServer) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = watch::Sender::new(Seen::default());
        let interceptor = CheckToken {
            registry: auth.registry(),
            seen: seen.clone(),
        };
        let service = InterceptedService::new(service_fn(files), interceptor);
        tokio::spawn(Server::builder().serve_with_incoming(service, TcpIncoming::from(listener)));
        Self { url, seen }
    }

    async fn channel(&self) -> Channel {
        Channel::from_shared(self.url.clone())
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// How many calls reached the interceptor, and how many of them it refused.
    fn calls_and_refusals(&self) -> (u64, u64) {
        let seen = *self.seen.borrow();
        (seen.calls, seen.refused)
    }
}

// ---------------------------------------------------------------------------------------------
// The client: a tonic `Channel` behind the layer.

type Client = tonic::client::Grpc<BearerAuth<Channel>>;

fn client(layer: BearerAuthLayer, channel: Channel) -> Client {
    let service = ServiceBuilder::new().layer(layer).service(channel);
    tonic::client::Grpc::new(service)
}

/// Calls `Put` with `bytes` bytes of data.
async fn put<T>(client: &mut tonic::client::Grpc<T>, bytes: usize) -> Result<Receipt, Status>
where
    T: tonic::client::GrpcService<Body>,
    T::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error: Into<tower_client_credentials::BoxError>,
{
    client
        .ready()
        .await
        .map_err(|e| Status::from_error(e.into()))?;
    let request = Request::new(Chunk {
        data: vec![b'x'; bytes],
    });
    let codec = ProstCodec::<Chunk, Receipt>::default();
    let response = client
        .unary(request, PathAndQuery::from_static(PUT), codec)
        .await?;
    Ok(response.into_inner())
}

// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_revoked_token_is_replaced_and_the_call_succeeds_after_one_retry() {
    let auth = MockAuthServer::new();
    let handle = builder(&auth).build().unwrap().start().await.unwrap();
    let server = GrpcServer::start(&auth).await;
    let channel = server.channel().await;

    // Without the layer, the server refuses the call.
    let mut bare = tonic::client::Grpc::new(channel.clone());
    let status = put(&mut bare, 1).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_eq!(server.calls_and_refusals(), (1, 1));

    // With it, the call carries the current token.
    let mut client = client(BearerAuthLayer::new(handle.clone()), channel);
    let first_jti = auth.last_token().unwrap().jti;
    let receipt = put(&mut client, 16).await.unwrap();
    assert_eq!((receipt.bytes, &*receipt.jti), (16, &*first_jti));
    assert_eq!(server.calls_and_refusals(), (2, 1));
    assert_eq!(auth.token_requests(), 1);

    // The token is revoked at the authorization server: the next call is refused once, the
    // layer fetches one new token and sends the call again, which succeeds.
    auth.revoke_all();
    let receipt = put(&mut client, 16).await.unwrap();
    assert_eq!(server.calls_and_refusals(), (4, 2));
    assert_eq!(auth.token_requests(), 2);
    let second = auth.last_token().unwrap();
    assert_ne!(second.jti, first_jti);
    assert_eq!((receipt.bytes, &*receipt.jti), (16, &*second.jti));

    // Later calls use the new token directly.
    let receipt = put(&mut client, 16).await.unwrap();
    assert_eq!(receipt.jti, second.jti);
    assert_eq!(server.calls_and_refusals(), (5, 2));
    assert_eq!(auth.token_requests(), 2);
}

/// A client stream still being written when the first attempt is refused: the retry sends what
/// was already sent, then the rest as it comes, and the server sees every message once.
#[tokio::test]
async fn a_client_stream_refused_mid_way_is_replayed_in_full() {
    let auth = MockAuthServer::new();
    let handle = builder(&auth).build().unwrap().start().await.unwrap();
    let server = GrpcServer::start(&auth).await;
    let mut client = client(BearerAuthLayer::new(handle.clone()), server.channel().await);
    auth.revoke_all();

    let (messages, stream) = mpsc::channel(4);
    messages.send(chunk(b"one")).await.unwrap();
    client.ready().await.unwrap();
    let mut call = tokio::spawn(async move {
        let codec = ProstCodec::<Chunk, Receipt>::default();
        let request = Request::new(ReceiverStream::new(stream));
        client
            .client_streaming(request, PathAndQuery::from_static(UPLOAD), codec)
            .await
    });

    // Wait until the retry has reached the server (the stream is still open, so the call
    // cannot have finished), then write the rest.
    let mut seen = server.seen.subscribe();
    tokio::select! {
        result = &mut call => panic!("the call ended before its retry: {result:?}"),
        seen = seen.wait_for(|seen| seen.calls == 2) => {
            assert_eq!(*seen.unwrap(), Seen { calls: 2, refused: 1 });
        }
    }
    messages.send(chunk(b"two")).await.unwrap();
    messages.send(chunk(b"three")).await.unwrap();
    drop(messages);

    let receipt = call.await.unwrap().unwrap().into_inner();
    assert_eq!((receipt.messages, receipt.bytes), (3, 11));
    assert_eq!(receipt.jti, auth.last_token().unwrap().jti);
    assert_eq!(server.calls_and_refusals(), (2, 1));
    assert_eq!(auth.token_requests(), 2);
}

/// A body larger than the replay limit is sent once: its `UNAUTHENTICATED` comes back to the
/// caller, and the refused token is still replaced, so the next call goes through.
#[tokio::test]
async fn a_body_over_the_replay_limit_is_not_retried() {
    let auth = MockAuthServer::new();
    let handle = builder(&auth).build().unwrap().start().await.unwrap();
    let server = GrpcServer::start(&auth).await;
    let layer = BearerAuthLayer::new(handle.clone()).replay_limit(LIMIT);
    let mut client = client(layer, server.channel().await);
    let first_jti = auth.last_token().unwrap().jti;
    auth.revoke_all();

    let status = put(&mut client, 4 * LIMIT).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_eq!(server.calls_and_refusals(), (1, 1));

    // A small call next: it gets through with the new token (at once, or after one retry if it
    // still went out with the refused one), and no other token is fetched.
    let receipt = put(&mut client, LIMIT / 2).await.unwrap();
    assert_eq!(receipt.bytes, LIMIT as u64 / 2);
    assert_ne!(receipt.jti, first_jti);
    assert_eq!(receipt.jti, auth.last_token().unwrap().jti);
    assert_eq!(auth.token_requests(), 2);
}

/// After a large body's `UNAUTHENTICATED`, the next call, large too, must carry the new token:
/// it cannot be retried, so if it goes out with the refused one it fails as well.
#[tokio::test]
async fn the_call_after_an_unreplayable_refusal_carries_the_new_token() {
    let auth = MockAuthServer::new();
    let handle = builder(&auth).build().unwrap().start().await.unwrap();
    let server = GrpcServer::start(&auth).await;
    let layer = BearerAuthLayer::new(handle.clone()).replay_limit(LIMIT);
    let mut client = client(layer, server.channel().await);
    auth.revoke_all();

    let status = put(&mut client, 4 * LIMIT).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");

    let receipt = put(&mut client, 4 * LIMIT).await.unwrap();
    assert_eq!(receipt.bytes, 4 * LIMIT as u64);
    assert_eq!(receipt.jti, auth.last_token().unwrap().jti);
    assert_eq!(server.calls_and_refusals(), (2, 1));
    assert_eq!(auth.token_requests(), 2);
}
