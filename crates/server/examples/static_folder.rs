//! An extra folder of static files, served at `/media` and known to templates as
//! `url_for('media', path='/poster.png')`, as WebGear_RTC users mount folders in Starlette.
//!
//! ```sh
//! mkdir -p media && cargo run -p webgear-rtc --example static_folder
//! ```

use webgear_rtc::{SourceSpec, WebGearRtc};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let app =
        WebGearRtc::builder().source(SourceSpec::TestPattern).static_folder("media", "/media", "media").build().await?;
    let listener = tokio::net::TcpListener::bind("0.0.0.0:8000").await?;
    webgear_rtc::serve(listener, app.router(), async { tokio::signal::ctrl_c().await.unwrap_or(()) }).await;
    app.shutdown().await;
    Ok(())
}
