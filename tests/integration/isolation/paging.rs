//! Paging: the facade's `next` links are gateway cursors bound to the principal. They
//! never name the EHR, B cannot follow A's (nor A B's), a cursor with one character
//! changed is refused, an expired one too, and raw upstream paging URLs or google
//! fhir-gateway style `_getpages` parameters are not a way around the checks.

use super::{Attempt, Expect, Fixture, Resp, Tok, enc, finish};

/// How many attempts [`cursors_are_bound_to_the_principal`] makes (checked at its end).
pub const ATTEMPTS: usize = 22;

fn next_link(r: &Resp) -> Option<String> {
    r.json()?["link"]
        .as_array()?
        .iter()
        .find(|l| l["relation"] == "next")
        .and_then(|l| l["url"].as_str())
        .map(str::to_owned)
}

/// The path under `/fhir` of a gateway URL.
fn under_fhir<'a>(fx: &Fixture, url: &'a str) -> Option<&'a str> {
    url.strip_prefix(fx.gw.as_str())
}

/// Changes one character of the cursor in a link (at `at` from the cursor's start).
fn tamper(path: &str, at: usize) -> String {
    let (head, cursor) = path.split_once("_cursor=").unwrap_or((path, ""));
    let mut chars: Vec<char> = cursor.chars().collect();
    let i = at.min(chars.len().saturating_sub(1));
    if let Some(c) = chars.get_mut(i) {
        *c = if *c == 'A' { 'B' } else { 'A' };
    }
    format!("{head}_cursor={}", chars.into_iter().collect::<String>())
}

/// Runs one checked attempt, counting it.
async fn step(
    fx: &Fixture,
    a: Attempt,
    count: &mut usize,
    failures: &mut Vec<String>,
) -> Option<Resp> {
    *count += 1;
    match fx.check(&a).await {
        Ok(r) => Some(r),
        Err(e) => {
            failures.push(e);
            None
        }
    }
}

#[tokio::test]
async fn cursors_are_bound_to_the_principal() {
    let fx = Fixture::new().await;
    let mut failures = Vec::new();
    let mut count = 0;
    // 1. A's first page: its `next` link is the gateway's.
    let first = step(
        &fx,
        Attempt::get("A's first page of Observations", "/Observation?_count=2")
            .expect(Expect::OnlyA(2)),
        &mut count,
        &mut failures,
    )
    .await;
    let next = first.as_ref().and_then(next_link);
    let Some(next) = next else {
        failures.push("[paging] A's first page has no next link".to_owned());
        finish("paging", count, &failures);
        return;
    };
    let Some(page) = under_fhir(&fx, &next).map(str::to_owned) else {
        failures.push(format!(
            "[paging] the next link does not point at the gateway: {next}"
        ));
        finish("paging", count, &failures);
        return;
    };

    // 2. A follows it; 3-4. B (and A with other scopes) may not.
    step(
        &fx,
        Attempt::get("A follows A's next link", &page).expect(Expect::OnlyA(1)),
        &mut count,
        &mut failures,
    )
    .await;
    step(
        &fx,
        Attempt::get("B follows A's next link", &page)
            .token(Tok::B)
            .expect(Expect::Status(vec![401, 403])),
        &mut count,
        &mut failures,
    )
    .await;
    let narrower = fx
        .app
        .patient_token(super::A, "launch/patient patient/Observation.rs");
    step(
        &fx,
        Attempt::get("A with other scopes follows A's next link", &page)
            .token(Tok::Bearer(narrower))
            .expect(Expect::Status(vec![400, 401, 403])),
        &mut count,
        &mut failures,
    )
    .await;
    step(
        &fx,
        Attempt::get("no token follows A's next link", &page)
            .token(Tok::None)
            .expect(Expect::Unauthorized),
        &mut count,
        &mut failures,
    )
    .await;

    // 6-10. Tampered cursors.
    let cursor_len = page.split_once("_cursor=").map_or(0, |(_, c)| c.len());
    for (name, at) in [
        ("first", 0),
        ("middle", cursor_len / 2),
        ("last", cursor_len),
    ] {
        step(
            &fx,
            Attempt::get(
                format!("A follows a cursor with its {name} character changed"),
                tamper(&page, at),
            )
            .expect(Expect::Status(vec![400, 403])),
            &mut count,
            &mut failures,
        )
        .await;
    }
    step(
        &fx,
        Attempt::get("A follows a truncated cursor", &page[..page.len() - 5])
            .expect(Expect::Status(vec![400, 403])),
        &mut count,
        &mut failures,
    )
    .await;
    step(
        &fx,
        Attempt::get(
            "A follows a cursor with patient=B appended",
            format!("{page}&patient=pat-2"),
        )
        .expect(Expect::DeniedOrOnlyA),
        &mut count,
        &mut failures,
    )
    .await;

    // 11-15. Cursors A makes up.
    let raw_upstream = format!(
        "{}/Observation?patient=pat-2&_count=2&_offset=2",
        fx.up_fhir
    );
    for (name, cursor) in [
        ("an upstream URL naming B as cursor", enc(&raw_upstream)),
        (
            "a made-up base64 cursor",
            "eyJ1cmwiOiJPYnNlcnZhdGlvbj9wYXRpZW50PXBhdC0yIn0".to_owned(),
        ),
        ("an empty cursor", String::new()),
    ] {
        step(
            &fx,
            Attempt::get(
                format!("A follows {name}"),
                format!("/_page?_cursor={cursor}"),
            )
            .expect(Expect::Status(vec![400, 403, 404])),
            &mut count,
            &mut failures,
        )
        .await;
    }
    step(
        &fx,
        Attempt::get("A calls _page without a cursor", "/_page")
            .expect(Expect::Status(vec![400, 404])),
        &mut count,
        &mut failures,
    )
    .await;
    step(
        &fx,
        Attempt::get(
            "google-style _getpages",
            "/?_getpages=abc&_getpagesoffset=2&_count=2",
        )
        .expect(Expect::Status(vec![400, 403, 404, 405])),
        &mut count,
        &mut failures,
    )
    .await;

    // 16-17. Offsets A picks directly are narrowed like any search.
    step(
        &fx,
        Attempt::get(
            "_offset with patient=B",
            "/Observation?patient=pat-2&_count=2&_offset=2",
        )
        .expect(Expect::Forbidden),
        &mut count,
        &mut failures,
    )
    .await;
    step(
        &fx,
        Attempt::get("_offset past A's data", "/Observation?_count=5&_offset=5")
            .expect(Expect::DeniedOrOnlyA),
        &mut count,
        &mut failures,
    )
    .await;

    // 18. B's own cursor replayed by A.
    let b_first = fx
        .send(&Attempt::get("", "/Observation?_count=2").token(Tok::B))
        .await;
    let b_page = next_link(&b_first).and_then(|u| under_fhir(&fx, &u).map(str::to_owned));
    match b_page {
        Some(b_page) => {
            step(
                &fx,
                Attempt::get("A follows B's next link", &b_page)
                    .expect(Expect::Status(vec![401, 403])),
                &mut count,
                &mut failures,
            )
            .await;
        }
        None => {
            count += 1;
            failures.push(format!(
                "[paging] B's first page has no gateway next link: {}",
                b_first.describe()
            ));
        }
    }

    // 19. A cursor of a search over shared data, replayed by B.
    let shared = fx
        .get_a("/Practitioner?_count=2&_revinclude=Encounter:practitioner")
        .await;
    match next_link(&shared).and_then(|u| under_fhir(&fx, &u).map(str::to_owned)) {
        Some(p) => {
            step(
                &fx,
                Attempt::get("B follows A's Practitioner+Encounter next link", &p)
                    .token(Tok::B)
                    .expect(Expect::Status(vec![401, 403])),
                &mut count,
                &mut failures,
            )
            .await;
        }
        None => {
            count += 1;
            failures.push(format!(
                "[paging] no next link on a Practitioner page: {}",
                shared.describe()
            ));
        }
    }

    // 20. Walking all of A's pages: only A's Observations, every one of them, and every
    // link points at the gateway.
    count += 1;
    let mut seen = std::collections::BTreeSet::new();
    let mut path = Some("/Observation?_count=50".to_owned());
    let mut pages = 0;
    while let Some(p) = path.take() {
        pages += 1;
        if pages > 100 {
            failures.push("[paging] more than 100 pages".to_owned());
            break;
        }
        let r = fx.get_a(&p).await;
        let leaks = fx.leaks(&r);
        if r.status != 200 || !leaks.is_empty() {
            failures.push(format!("[paging walk] {p}: {leaks:?} {}", r.describe()));
            break;
        }
        let body = r.json().unwrap_or_default();
        if let Err(e) = fx.only_a(&body) {
            failures.push(format!("[paging walk] {p}: {e}"));
        }
        for link in body["link"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
            let url = link["url"].as_str().unwrap_or_default();
            if !url.starts_with(&fx.gw) {
                failures.push(format!("[paging walk] a link not at the gateway: {url}"));
            }
        }
        for e in body["entry"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
            seen.insert(e["resource"]["id"].as_str().unwrap_or_default().to_owned());
        }
        path = next_link(&r).and_then(|u| under_fhir(&fx, &u).map(str::to_owned));
    }
    let mine: std::collections::BTreeSet<String> = fx
        .a_res
        .get("Observation")
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .collect();
    if seen != mine {
        failures.push(format!(
            "[paging walk] A's pages held {} Observations, A has {}",
            seen.len(),
            mine.len()
        ));
    }

    // 21-22. A cursor outlives neither its expiry nor its gateway's key.
    let sandbox = crate::support::sandbox().await;
    let short = crate::support::TestApp::spawn_with(sandbox, |config, _| {
        config.facade.cursor_ttl_seconds = 1;
    })
    .await;
    let fx2 = Fixture::on(short);
    let first = fx2.get_a("/Observation?_count=2").await;
    match next_link(&first).and_then(|u| under_fhir(&fx2, &u).map(str::to_owned)) {
        Some(p) => {
            // The same cursor on the other gateway (another signing key).
            count += 1;
            if let Err(e) = fx
                .check(
                    &Attempt::get("A's cursor from another gateway", &p)
                        .expect(Expect::Status(vec![400, 403])),
                )
                .await
            {
                failures.push(e);
            }
            tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
            count += 1;
            if let Err(e) = fx2
                .check(
                    &Attempt::get("A follows an expired cursor", &p)
                        .expect(Expect::Status(vec![400, 403, 410])),
                )
                .await
            {
                failures.push(e);
            }
        }
        None => {
            count += 2;
            failures.push(format!(
                "[paging] no next link on the short-lived gateway: {}",
                first.describe()
            ));
        }
    }
    assert_eq!(count, ATTEMPTS, "update paging::ATTEMPTS");
    finish("paging", count, &failures);
}
