//! A tonic gRPC client behind `BearerAuthLayer`.
//!
//! ```text
//! cargo run --example tonic_client --all-features
//! ```
//!
//! Everything runs in this process on 127.0.0.1: the embedded authorization server issues
//! tokens, and a small gRPC server (hand-written, so no protoc is needed) accepts only live
//! ones through an auth interceptor. The client is a `tonic::transport::Channel` with the layer
//! in front. Halfway through, the authorization server revokes every token: the next call is
//! refused with `UNAUTHENTICATED`, and the layer fetches a new token and sends it again.
//!
//! The `tonic` feature makes `tonic::body::Body` replayable, which the retry needs.

use std::convert::Infallible;

use http::uri::PathAndQuery;
use tokio::net::TcpListener;
use tonic::{
    Request, Response, Status,
    body::Body,
    service::interceptor::InterceptedService,
    transport::{Channel, Server, server::TcpIncoming},
};
use tonic_prost::ProstCodec;
use tower::{ServiceBuilder, service_fn};
use tower_client_credentials::{BearerAuthLayer, BoxError, ClientCredentials};
use tower_client_credentials_testkit::{
    DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, MockAuthServer, TokenRegistry,
};

/// `greeter.Greeter/SayHello`'s request, as prost would generate it from a `.proto` file.
#[derive(Clone, PartialEq, prost::Message)]
struct HelloRequest {
    #[prost(string, tag = "1")]
    name: String,
}

/// `greeter.Greeter/SayHello`'s reply.
#[derive(Clone, PartialEq, prost::Message)]
struct HelloReply {
    #[prost(string, tag = "1")]
    message: String,
}

const SAY_HELLO: &str = "/greeter.Greeter/SayHello";

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // The authorization server, and the gRPC server that trusts its tokens.
    let auth = MockAuthServer::start().await?;
    let grpc_url = serve_greeter(auth.registry()).await?;
    println!("authorization server: {}", auth.token_url());
    println!("gRPC server:          {grpc_url}");

    // The token handle, and the layer in front of a tonic Channel.
    let tokens =
        ClientCredentials::builder(auth.token_url(), DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET)
            .build()?
            .start()
            .await?;
    let channel = Channel::from_shared(grpc_url)?.connect().await?;
    let service = ServiceBuilder::new()
        .layer(BearerAuthLayer::new(tokens))
        .service(channel);
    let mut client = tonic::client::Grpc::new(service);

    for (round, name) in ["Ada", "Grace", "Barbara"].into_iter().enumerate() {
        if round == 1 {
            auth.revoke_all();
            println!("-- the authorization server revokes every token --");
        }
        client.ready().await?;
        let request = Request::new(HelloRequest { name: name.into() });
        let codec = ProstCodec::<HelloRequest, HelloReply>::default();
        let reply = client
            .unary(request, PathAndQuery::from_static(SAY_HELLO), codec)
            .await?;
        println!(
            "{:<7} -> {:?} (tokens fetched so far: {})",
            name,
            reply.into_inner().message,
            auth.issued()
        );
    }
    Ok(())
}

/// Serves `greeter.Greeter` on 127.0.0.1 behind an interceptor that accepts only tokens from
/// `registry` that are neither revoked nor expired, and returns the server's URL.
async fn serve_greeter(registry: TokenRegistry) -> std::io::Result<String> {
    let check_token = move |request: Request<()>| -> Result<Request<()>, Status> {
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .and_then(|token| registry.get(token));
        match token {
            Some(token) if !token.revoked && !token.is_expired() => Ok(request),
            Some(_) => {
                println!("   (server: token refused, answering UNAUTHENTICATED)");
                Err(Status::unauthenticated("token revoked or expired"))
            }
            None => Err(Status::unauthenticated("no valid bearer token")),
        }
    };
    let greeter = InterceptedService::new(service_fn(greeter), check_token);

    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(Server::builder().serve_with_incoming(greeter, TcpIncoming::from(listener)));
    Ok(url)
}

/// The `greeter.Greeter` service, routed by hand as tonic's generated code would.
async fn greeter(request: http::Request<Body>) -> Result<http::Response<Body>, Infallible> {
    let mut grpc = tonic::server::Grpc::new(ProstCodec::<HelloReply, HelloRequest>::default());
    Ok(match request.uri().path() {
        SAY_HELLO => grpc.unary(service_fn(say_hello), request).await,
        _ => Status::unimplemented("no such method").into_http(),
    })
}

async fn say_hello(request: Request<HelloRequest>) -> Result<Response<HelloReply>, Status> {
    let name = request.into_inner().name;
    Ok(Response::new(HelloReply {
        message: format!("Hello, {name}!"),
    }))
}
