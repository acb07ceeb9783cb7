//! The patient portal's pages (`/`), driven like a browser over HTTP: a cookie jar, a
//! login through the sandbox's authorization server, forms posted as
//! `application/x-www-form-urlencoded` with the `Origin` a browser sends, and the HTML
//! parsed with `scraper` to check its structure.

mod a11y;
mod flows;
mod i18n;
mod isolation;
mod security;

use std::collections::HashMap;

use reqwest::header::{CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use scraper::{Html, Selector};

use crate::support::{TestApp, http_client};

/// A browser signed in (or not) to one gateway's portal.
pub struct Browser {
    http: reqwest::Client,
    pub gateway: String,
    jar: HashMap<String, String>,
    /// Headers sent with every request (`Accept-Language`, ...).
    extra: Vec<(String, String)>,
}

/// One answer, with its HTML parsed.
pub struct Page {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Page {
    pub fn html(&self) -> Html {
        Html::parse_document(&self.body)
    }

    pub fn location(&self) -> String {
        self.headers
            .get(LOCATION)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    }

    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    }

    /// The text of every element matching `selector`.
    pub fn texts(&self, selector: &str) -> Vec<String> {
        let sel = Selector::parse(selector).unwrap();
        self.html()
            .select(&sel)
            .map(|e| {
                e.text()
                    .collect::<String>()
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    }

    pub fn count(&self, selector: &str) -> usize {
        let sel = Selector::parse(selector).unwrap();
        self.html().select(&sel).count()
    }

    /// The value of `attr` on each element matching `selector`.
    pub fn attrs(&self, selector: &str, attr: &str) -> Vec<String> {
        let sel = Selector::parse(selector).unwrap();
        self.html()
            .select(&sel)
            .filter_map(|e| e.value().attr(attr).map(str::to_owned))
            .collect()
    }

    /// The `<h1>`'s text.
    pub fn h1(&self) -> String {
        let h1 = self.texts("h1");
        assert_eq!(h1.len(), 1, "exactly one h1: {}", self.body);
        h1[0].clone()
    }

    /// The fields a form (the first matching `selector`) would send as it is: its
    /// hidden inputs, text inputs and textareas with their values, checked radios and
    /// selected options.
    pub fn form(&self, selector: &str) -> Form {
        let html = self.html();
        let sel = Selector::parse(selector).unwrap();
        let form = html
            .select(&sel)
            .next()
            .unwrap_or_else(|| panic!("no form {selector}: {}", self.body));
        let action = form.value().attr("action").unwrap_or("").to_owned();
        let mut fields = Vec::new();
        for input in form.select(&Selector::parse("input").unwrap()) {
            let v = input.value();
            let (Some(name), kind) = (v.attr("name"), v.attr("type").unwrap_or("text")) else {
                continue;
            };
            if matches!(kind, "radio" | "checkbox") && v.attr("checked").is_none() {
                continue;
            }
            fields.push((name.to_owned(), v.attr("value").unwrap_or("").to_owned()));
        }
        for area in form.select(&Selector::parse("textarea").unwrap()) {
            if let Some(name) = area.value().attr("name") {
                fields.push((name.to_owned(), area.text().collect()));
            }
        }
        for select in form.select(&Selector::parse("select").unwrap()) {
            let Some(name) = select.value().attr("name") else {
                continue;
            };
            let chosen = select
                .select(&Selector::parse("option[selected]").unwrap())
                .next()
                .or_else(|| select.select(&Selector::parse("option").unwrap()).next());
            if let Some(o) = chosen {
                fields.push((
                    name.to_owned(),
                    o.value().attr("value").unwrap_or("").to_owned(),
                ));
            }
        }
        Form { action, fields }
    }

    /// The radios' values of a form field.
    pub fn options(&self, name: &str) -> Vec<String> {
        self.attrs(&format!("input[name={name}]"), "value")
    }
}

/// A form as a browser would send it.
#[derive(Debug, Clone)]
pub struct Form {
    pub action: String,
    pub fields: Vec<(String, String)>,
}

impl Form {
    /// Sets a field (replacing what the page put there).
    pub fn set(mut self, name: &str, value: &str) -> Form {
        self.fields.retain(|(k, _)| k != name);
        self.fields.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn without(mut self, name: &str) -> Form {
        self.fields.retain(|(k, _)| k != name);
        self
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Browser {
    pub fn new(app: &TestApp) -> Browser {
        Browser {
            http: http_client(),
            gateway: app.url(""),
            jar: HashMap::new(),
            extra: Vec::new(),
        }
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Browser {
        self.extra.retain(|(k, _)| k != name);
        self.extra.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Another tab of the same browser (same cookies).
    pub fn clone_session(&self) -> Browser {
        Browser {
            http: self.http.clone(),
            gateway: self.gateway.clone(),
            jar: self.jar.clone(),
            extra: self.extra.clone(),
        }
    }

    pub fn cookie(&self, name: &str) -> Option<&String> {
        self.jar.get(name)
    }

    async fn send(&mut self, request: reqwest::RequestBuilder) -> Page {
        let mut request = request.build().unwrap();
        let to_gateway = request.url().as_str().starts_with(&self.gateway);
        if to_gateway {
            if !self.jar.is_empty() {
                let header = self
                    .jar
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join("; ");
                request
                    .headers_mut()
                    .insert(COOKIE, header.parse().unwrap());
            }
            for (k, v) in &self.extra {
                request.headers_mut().insert(
                    reqwest::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    v.parse().unwrap(),
                );
            }
        }
        let res = self.http.execute(request).await.unwrap();
        let page = Page {
            status: res.status().as_u16(),
            headers: res.headers().clone(),
            body: res.text().await.unwrap(),
        };
        if to_gateway {
            for line in page.headers.get_all(SET_COOKIE) {
                let line = line.to_str().unwrap();
                let (name, value) = line.split(';').next().unwrap().split_once('=').unwrap();
                if value.is_empty() || line.contains("Max-Age=0") {
                    self.jar.remove(name);
                } else {
                    self.jar.insert(name.to_owned(), value.to_owned());
                }
            }
        }
        page
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{path}", self.gateway)
        }
    }

    /// A GET, redirects not followed.
    pub async fn get_raw(&mut self, path: &str) -> Page {
        let url = self.url(path);
        self.send(self.http.get(url)).await
    }

    /// A GET, following the gateway's redirects.
    pub async fn get(&mut self, path: &str) -> Page {
        let mut page = self.get_raw(path).await;
        let mut hops = 0;
        while matches!(page.status, 302 | 303) && hops < 5 {
            let next = page.location();
            page = self.get_raw(&next).await;
            hops += 1;
        }
        page
    }

    /// Posts fields to `path` as a browser would (same-origin `Origin`), redirects not
    /// followed.
    pub async fn post_raw(&mut self, path: &str, fields: &[(String, String)]) -> Page {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        let url = self.url(path);
        let origin = self.gateway.clone();
        self.send(
            self.http
                .post(url)
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .header("origin", origin)
                .body(body),
        )
        .await
    }

    /// Submits a form; follows a redirect after it (post-redirect-get).
    pub async fn submit(&mut self, form: &Form) -> (Page, Page) {
        let first = self.post_raw(&form.action, &form.fields).await;
        let shown = if first.status == 303 {
            self.get(&first.location()).await
        } else {
            Page {
                status: first.status,
                headers: first.headers.clone(),
                body: first.body.clone(),
            }
        };
        (first, shown)
    }

    /// Signs in as `patient` through the sandbox's authorization server, starting from
    /// the sign-in page's button; returns the page the login came back to.
    pub async fn sign_in(&mut self, patient: &str) -> Page {
        let page = self.get("/").await;
        let href = page
            .attrs("a.button-start", "href")
            .into_iter()
            .next()
            .expect("a sign-in button");
        let started = self.get_raw(&href).await;
        assert_eq!(started.status, 303, "{}", started.body);
        let authorize = format!("{}&login_hint={patient}", started.location());
        let approved = self.get_raw(&authorize).await;
        assert_eq!(approved.status, 302, "{}", approved.body);
        let back = self.get_raw(&approved.location()).await;
        assert_eq!(back.status, 303, "{}", back.body);
        self.get(&back.location()).await
    }
}

/// A gateway and a browser signed in as `pat-1`.
pub async fn signed_in() -> (TestApp, Browser) {
    let app = TestApp::spawn().await;
    let mut browser = Browser::new(&app);
    let home = browser.sign_in("pat-1").await;
    assert_eq!(home.status, 200, "{}", home.body);
    (app, browser)
}
