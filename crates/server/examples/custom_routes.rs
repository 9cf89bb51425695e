//! Your own routes and templates beside the stream: `/hello` renders `hello.html` from the
//! data folder's `templates/`, with the same `url_for` and base theme as the default pages.
//!
//! ```sh
//! cargo run -p webgear-rtc --example custom_routes   # then open http://localhost:8000/hello
//! ```

use axum::extract::State;
use axum::response::Html;
use axum::routing::get;
use webgear_rtc::minijinja::context;
use webgear_rtc::{SourceSpec, WebGearRtc};

async fn hello(State(app): State<WebGearRtc>) -> Result<Html<String>, String> {
    let page = app.render("hello.html", "", context! { name => "visitor" }).map_err(|error| error.to_string())?;
    Ok(Html(page))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let app = WebGearRtc::builder().source(SourceSpec::TestPattern).build().await?;
    let template = app.data_location().join("templates/hello.html");
    if !template.exists() {
        std::fs::write(
            &template,
            "{% extends \"base.html\" %}{% block content %}<h1>Hello, {{ name }}!</h1>\
             <p><a href=\"{{ url_prefix }}/\">Watch the stream</a></p>{% endblock %}",
        )?;
    }
    let router = app.router().merge(axum::Router::new().route("/hello", get(hello)).with_state(app.clone()));
    let listener = tokio::net::TcpListener::bind("0.0.0.0:8000").await?;
    webgear_rtc::serve(listener, router, async { tokio::signal::ctrl_c().await.unwrap_or(()) }).await;
    app.shutdown().await;
    Ok(())
}
