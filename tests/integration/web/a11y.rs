//! The structure accessibility rests on, checked on every page (the browser tests run
//! axe-core on top): the language, landmarks, one `h1`, a skip link to `main`, every
//! field labelled, every `aria-describedby` pointing at something, errors tied to
//! their fields, and the current page marked in the navigation.

use scraper::Selector;

use super::{Page, signed_in};

fn assert_structure(path: &str, page: &Page) {
    assert!(!page.attrs("html", "lang")[0].is_empty(), "{path}");
    for landmark in ["header", "main#main", "footer"] {
        assert_eq!(page.count(landmark), 1, "{path}: {landmark}");
    }
    assert!(page.count("nav[aria-label]") >= 1, "{path}");
    page.h1();
    assert_eq!(page.attrs("a.skip-link", "href"), vec!["#main"], "{path}");
    assert_eq!(page.count("title"), 1 + page.count("svg title"), "{path}");
    let html = page.html();
    let ids: Vec<String> = html
        .select(&Selector::parse("[id]").unwrap())
        .filter_map(|e| e.value().attr("id").map(str::to_owned))
        .collect();
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "{path}: duplicate ids");
    for field in
        html.select(&Selector::parse("input:not([type=hidden]), select, textarea").unwrap())
    {
        let id = field
            .value()
            .attr("id")
            .unwrap_or_else(|| panic!("{path}: a field without an id"));
        let label = Selector::parse(&format!("label[for='{id}']")).unwrap();
        assert_eq!(html.select(&label).count(), 1, "{path}: {id} has one label");
    }
    for described in page.attrs("[aria-describedby]", "aria-describedby") {
        for id in described.split(' ') {
            assert!(
                ids.contains(&id.to_owned()),
                "{path}: aria-describedby {id}"
            );
        }
    }
    for labelled in page.attrs("[aria-labelledby]", "aria-labelledby") {
        for id in labelled.split(' ') {
            assert!(ids.contains(&id.to_owned()), "{path}: aria-labelledby {id}");
        }
    }
    for img in page.attrs("img", "alt") {
        assert!(!img.is_empty());
    }
}

#[tokio::test]
async fn every_page_has_landmarks_one_h1_and_labelled_fields() {
    let (_app, mut browser) = signed_in().await;
    let find = browser.get("/appointments/find").await;
    let appointment = browser
        .get("/appointments")
        .await
        .attrs("a", "href")
        .into_iter()
        .find(|h| h.ends_with("/cancel"));
    let mut paths: Vec<String> = [
        "/",
        "/record",
        "/record/lab-results",
        "/record/vital-signs",
        "/record/allergies",
        "/appointments",
        "/appointments?when=past",
        "/appointments/find",
        "/medications",
        "/medications/mr-1-1/refill",
        "/referrals",
        "/referrals/new",
        "/messages",
        "/messages/new",
        "/bills",
        "/download",
        "/download/summary",
        "/profile",
        "/session",
        "/nothing-here",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(cancel) = appointment {
        paths.push(cancel.clone());
        paths.push(cancel.replace("/cancel", "/reschedule"));
    }
    for path in &paths {
        let page = browser.get(path).await;
        assert_structure(path, &page);
    }
    // The current page is marked in the navigation.
    let page = browser.get("/medications").await;
    assert_eq!(
        page.attrs("nav.main-nav a[aria-current=page]", "href"),
        vec!["/medications"]
    );
    // An error state: the summary first, each error tied to its field.
    let form = find
        .form("form[action='/appointments/book']")
        .without("slot_id");
    let (refused, _) = browser.submit(&form).await;
    assert_structure("book error", &refused);
    assert_eq!(refused.attrs(".error-summary", "role"), vec!["alert"]);
    assert_eq!(
        refused.attrs("fieldset[aria-describedby]", "aria-describedby"),
        vec!["slot_id-error"]
    );
    let page = browser.get("/referrals/new").await;
    let (refused, _) = browser.submit(&page.form("main form")).await;
    assert_structure("referral error", &refused);
    assert_eq!(refused.attrs("#reason", "aria-invalid"), vec!["true"]);
    assert_eq!(
        refused.texts("#reason-error"),
        vec!["Error: Enter why you need the referral"]
    );
    // The anonymous pages too.
    let mut anonymous = super::Browser::new(&_app);
    assert_structure("sign-in", &anonymous.get("/").await);
    assert_structure("signed out", &anonymous.get("/signed-out").await);
}
