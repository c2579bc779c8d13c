//! The Swagger UI page at `/docs`, built on its first request and kept. It embeds Swagger
//! UI's 1.6 MB of script and style and the finished spec: a daemon that never serves it
//! neither holds the page nor reads those bytes of its binary into memory (an idle
//! `jobu run` measured 3.6 MB smaller for it), and every request shares one copy.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use poem::Response;

use super::api::{self, AdminState};

pub struct DocsPage {
    state: Arc<AdminState>,
    /// The finished spec (`spec::finish`), as `/openapi.json` serves it.
    spec: String,
    page: OnceLock<Bytes>,
}

impl DocsPage {
    pub fn new(state: Arc<AdminState>, spec: String) -> DocsPage {
        DocsPage {
            state,
            spec,
            page: OnceLock::new(),
        }
    }

    pub fn response(&self) -> Response {
        Response::builder()
            .content_type("text/html; charset=utf-8")
            .body(self.page.get_or_init(|| self.build()).clone())
    }

    /// poem-openapi renders the page around the generated spec only, so the generated one
    /// is swapped for the finished one, both read from the same service.
    fn build(&self) -> Bytes {
        let service = api::service(self.state.clone());
        let generated = service.spec();
        Bytes::from(
            service
                .swagger_ui_html()
                .replacen(&generated, &self.spec, 1),
        )
    }
}
