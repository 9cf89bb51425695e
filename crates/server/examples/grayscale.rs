//! Your own frame producer (vidgear's `custom_stream`): read any source, change every
//! frame in your own code, and stream the result. Here the picture turns grayscale.
//!
//! ```sh
//! cargo run -p webgear-rtc --example grayscale               # the test pattern
//! cargo run -p webgear-rtc --example grayscale -- clip.mp4   # any source
//! ```

use webgear_rtc::{Frame, PixelFormat, SourceSpec, WebGearRtc, from_fn};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let spec: SourceSpec = std::env::args().nth(1).unwrap_or_else(|| "testsrc".into()).parse()?;
    let mut source = spec.open(&Default::default())?;
    let frame_rate = source.frame_rate();
    let grayscale = from_fn(frame_rate, move || {
        let Some(frame) = source.read()? else { return Ok(None) };
        let captured_at = frame.captured_at();
        let picture = frame.into_i420();
        let (luma, chroma, _) = picture.planes();
        // Keep the brightness, drop the colour: neutral chroma is 128.
        let mut data = luma.to_vec();
        data.resize(luma.len() + 2 * chroma.len(), 128);
        let gray = Frame::new(picture.width(), picture.height(), PixelFormat::I420, data)?;
        Ok(Some(gray.with_capture_time(captured_at)))
    });

    let app = WebGearRtc::builder().custom_stream(grayscale).build().await?;
    let listener = tokio::net::TcpListener::bind("0.0.0.0:8000").await?;
    webgear_rtc::serve(listener, app.router(), async { tokio::signal::ctrl_c().await.unwrap_or(()) }).await;
    app.shutdown().await;
    Ok(())
}
