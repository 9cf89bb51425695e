//! Any tower layer wraps the app; here CORS, so a player on another origin may post offers.
//!
//! ```sh
//! cargo run -p webgear-rtc --example cors
//! ```

use tower_http::cors::CorsLayer;
use webgear_rtc::{SourceSpec, WebGearRtc};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let app = WebGearRtc::builder().source(SourceSpec::TestPattern).build().await?;
    let router = app.router().layer(CorsLayer::permissive());
    let listener = tokio::net::TcpListener::bind("0.0.0.0:8000").await?;
    webgear_rtc::serve(listener, router, async { tokio::signal::ctrl_c().await.unwrap_or(()) }).await;
    app.shutdown().await;
    Ok(())
}
