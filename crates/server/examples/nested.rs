//! The whole app under a prefix, inside a larger site: the stream lives at `/camera`,
//! and its pages, static files and signalling follow it there.
//!
//! ```sh
//! cargo run -p webgear-rtc --example nested   # then open http://localhost:8000/camera
//! ```

use axum::Router;
use axum::response::Html;
use axum::routing::get;
use webgear_rtc::{SourceSpec, WebGearRtc};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let app = WebGearRtc::builder().source(SourceSpec::TestPattern).build().await?;
    let site = Router::new()
        .route("/", get(|| async { Html(r#"<p>Our site. <a href="/camera">The camera</a></p>"#) }))
        .nest("/camera", app.router());
    let listener = tokio::net::TcpListener::bind("0.0.0.0:8000").await?;
    webgear_rtc::serve(listener, site, async { tokio::signal::ctrl_c().await.unwrap_or(()) }).await;
    app.shutdown().await;
    Ok(())
}
