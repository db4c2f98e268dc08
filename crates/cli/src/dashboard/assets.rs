//! The front end, embedded in the binary: plain HTML, CSS and JavaScript
//! from `crates/cli/assets/dashboard/`, no framework, nothing fetched from
//! elsewhere (an air-gapped region has no CDN).

/// One embedded file.
pub(crate) struct Asset {
    /// Its path under `/`.
    pub(crate) path: &'static str,
    /// Its `Content-Type`.
    pub(crate) content_type: &'static str,
    /// Its bytes.
    pub(crate) body: &'static str,
}

/// Every file the console serves; `/` is `index.html`.
pub(crate) const ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: include_str!("../../assets/dashboard/index.html"),
    },
    Asset {
        path: "/app.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../../assets/dashboard/app.css"),
    },
    Asset {
        path: "/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../assets/dashboard/app.js"),
    },
    Asset {
        path: "/favicon.svg",
        content_type: "image/svg+xml",
        body: include_str!("../../assets/dashboard/favicon.svg"),
    },
];
