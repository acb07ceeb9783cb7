//! Secure messages with the care team: the threads (unread marked), one thread, a new
//! thread to a member of the patient's care team, and a reply.

use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::html;
use portico_portal::careteam;
use portico_portal::messages::{self, NewReply, NewThread, ThreadStatus, ThreadView};
use portico_portal::view::{array, str_at};
use serde_json::json;

use super::forms::{self, Errors, FormPost, hidden, posted_key};
use super::i18n::M;
use super::layout::{self, none, stale};
use super::see_other;
use super::viewer::Viewer;

pub async fn list(v: Viewer) -> Response {
    let list = match messages::list_threads(v.ctx()).await {
        Ok(t) => t,
        Err(e) => return v.error(e).into_response(),
    };
    let l = v.lang();
    let c = &v.chrome;
    let content = html! {
        (stale(l, list.stale))
        p { a.button href=(c.href("/messages/new")) { (l.t(M::NewMessage)) } }
        @if list.threads.is_empty() { (none(l.t(M::NoThreads))) }
        ul.plain.thread-list {
            @for t in &list.threads {
                li.thread .unread[t.unread > 0] {
                    a href=(c.href(&format!("/messages/{}", t.id))) {
                        @if t.unread > 0 { strong { (t.topic.as_deref().unwrap_or(l.t(M::NoTopic))) } }
                        @else { (t.topic.as_deref().unwrap_or(l.t(M::NoTopic))) }
                    }
                    @if t.unread > 0 {
                        " " span.tag { (l.fill(M::UnreadTag, &[("count", &t.unread.to_string())])) }
                    }
                    @if t.status == ThreadStatus::Closed { " " span.tag.tag-grey { (l.t(M::Closed)) } }
                    br;
                    span.hint {
                        (t.participants.join(", "))
                        @if let Some(at) = &t.last_message_at { " · " (l.date(at)) }
                    }
                    @if let Some(s) = &t.snippet { p.snippet { (s) } }
                }
            }
        }
    };
    layout::ok(c, l.t(M::MessagesTitle), content)
}

/// The people the patient may write to: their care teams and the teams' members.
async fn recipients(v: &Viewer) -> Vec<(String, String)> {
    let teams = careteam::active(v.ctx()).await.unwrap_or_default();
    let mut out = Vec::new();
    for team in &teams {
        if let Some(id) = str_at(team, "id") {
            let name = str_at(team, "name").unwrap_or(v.lang().t(M::KindCareTeam));
            out.push((format!("CareTeam/{id}"), name.to_owned()));
        }
        for p in array(team, "participant") {
            let Some(member) = p.get("member") else {
                continue;
            };
            let Some(reference) = str_at(member, "reference") else {
                continue;
            };
            if !reference.starts_with("Practitioner/") {
                continue;
            }
            let name = str_at(member, "display").unwrap_or(reference);
            let role = p
                .pointer("/role/0/text")
                .or_else(|| p.pointer("/role/0/coding/0/display"))
                .and_then(|r| r.as_str());
            let label = match role {
                Some(r) => format!("{name} ({r})"),
                None => name.to_owned(),
            };
            if !out.iter().any(|(r, _)| r == reference) {
                out.push((reference.to_owned(), label));
            }
        }
    }
    out
}

pub async fn new_form(v: Viewer) -> Response {
    new_page(
        &v,
        &forms::Fields::default(),
        &forms::new_key(),
        Errors::default(),
        StatusCode::OK,
    )
    .await
}

async fn new_page(
    v: &Viewer,
    fields: &forms::Fields,
    key: &str,
    errors: Errors,
    status: StatusCode,
) -> Response {
    let l = v.lang();
    let c = &v.chrome;
    let options: Vec<(String, String)> =
        std::iter::once((String::new(), l.t(M::ChooseRecipient).to_owned()))
            .chain(recipients(v).await)
            .collect();
    let title = errors.title(l, l.t(M::NewMessage));
    let content = html! {
        (forms::summary(l, &errors))
        form method="post" action=(c.href("/messages")) novalidate {
            (hidden(v, Some(key)))
            (forms::select(l, "recipient", l.t(M::To), &options, &fields.value("recipient"), &errors))
            (forms::input(l, "topic", "text", l.t(M::Topic), None, &fields.value("topic"), &errors, ""))
            (forms::textarea(l, "text", l.t(M::Message), Some(l.t(M::MessageHint)), &fields.value("text"), &errors))
            div.button-group {
                button.button type="submit" { (l.t(M::Send)) }
                a href=(c.href("/messages")) { (l.t(M::BackToMessages)) }
            }
        }
    };
    layout::respond(c, status, &title, content)
}

pub async fn start(form: FormPost) -> Response {
    let FormPost { viewer: v, fields } = form;
    let l = v.lang();
    let key = posted_key(&fields);
    let mut errors = Errors::default();
    let (recipient, topic, text) = (
        fields.text("recipient"),
        fields.text("topic"),
        fields.text("text"),
    );
    if recipient.is_none() {
        errors.add(Some("recipient"), l.t(M::ErrChooseRecipient));
    }
    if topic.is_none() {
        errors.add(Some("topic"), l.t(M::ErrEnterTopic));
    }
    if text.is_none() {
        errors.add(Some("text"), l.t(M::ErrEnterMessage));
    }
    let (Some(recipient), Some(topic), Some(text)) = (recipient, topic, text) else {
        return new_page(&v, &fields, &key, errors, StatusCode::UNPROCESSABLE_ENTITY).await;
    };
    let new = NewThread {
        recipient,
        topic,
        text,
        attachments: Vec::new(),
    };
    let fingerprint = json!(new);
    match forms::run(
        &v,
        &fields,
        "message-thread",
        &fingerprint,
        StatusCode::CREATED,
        async |ctx, idem| messages::start_thread(ctx, &new, idem).await,
    )
    .await
    {
        Ok(thread) => match thread.get("id").and_then(|i| i.as_str()) {
            Some(id) => see_other(&v.chrome.base, &format!("/messages/{id}?done=thread")),
            None => see_other(&v.chrome.base, "/messages?done=thread"),
        },
        Err(e) => {
            let field = match e.code {
                "recipient_not_allowed" | "invalid_recipient" => Some("recipient"),
                "text_too_long" => Some("text"),
                _ => None,
            };
            new_page(
                &v,
                &fields,
                &key,
                Errors::from_api(l, field, &e),
                Errors::status(&e),
            )
            .await
        }
    }
}

pub async fn thread(v: Viewer, Path(id): Path<String>) -> Response {
    match messages::read_thread(v.ctx(), &id).await {
        Ok(t) => thread_page(
            &v,
            &t,
            &forms::Fields::default(),
            &forms::new_key(),
            Errors::default(),
            StatusCode::OK,
        ),
        Err(e) => v.error(e).into_response(),
    }
}

fn thread_page(
    v: &Viewer,
    t: &ThreadView,
    fields: &forms::Fields,
    key: &str,
    errors: Errors,
    status: StatusCode,
) -> Response {
    let l = v.lang();
    let c = &v.chrome;
    let topic = t
        .topic
        .clone()
        .unwrap_or_else(|| l.t(M::NoTopic).to_owned());
    let title = errors.title(l, &topic);
    let content = html! {
        (forms::summary(l, &errors))
        (stale(l, t.stale))
        p { a href=(c.href("/messages")) { "← " (l.t(M::BackToMessages)) } }
        p.hint {
            (l.t(M::Participants)) ": "
            (t.participants.iter().map(|p| if p.is_me { l.t(M::You).to_owned() } else { p.display.clone().unwrap_or_else(|| p.reference.clone()) }).collect::<Vec<_>>().join(", "))
        }
        ol.plain.messages {
            @for m in &t.messages {
                @let mine = m.sender.as_ref().is_some_and(|s| s.is_me);
                li.message .message-mine[mine] .message-unread[!m.read] {
                    p.message-meta {
                        strong { @if mine { (l.t(M::You)) } @else { (m.sender.as_ref().and_then(|s| s.display.clone()).unwrap_or_default()) } }
                        @if let Some(at) = &m.sent { " · " (l.date(at)) }
                        @if !m.read { " " span.tag { (l.t(M::New)) } }
                    }
                    @if let Some(text) = &m.text { p.message-text { (text) } }
                }
            }
        }
        @if t.status == ThreadStatus::Open {
            h2 { (l.t(M::Reply)) }
            form method="post" action=(c.href(&format!("/messages/{}/reply", t.id))) novalidate {
                (hidden(v, Some(key)))
                (forms::textarea(l, "text", l.t(M::YourReply), None, &fields.value("text"), &errors))
                button.button type="submit" { (l.t(M::SendReply)) }
            }
        } @else {
            p { (l.t(M::ErrThreadClosed)) }
        }
    };
    layout::respond(c, status, &title, content)
}

pub async fn reply(Path(id): Path<String>, form: FormPost) -> Response {
    let FormPost { viewer: v, fields } = form;
    let l = v.lang();
    let key = posted_key(&fields);
    let Some(text) = fields.text("text") else {
        let mut errors = Errors::default();
        errors.add(Some("text"), l.t(M::ErrEnterMessage));
        return match messages::read_thread(v.ctx(), &id).await {
            Ok(t) => thread_page(
                &v,
                &t,
                &fields,
                &key,
                errors,
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            Err(e) => v.error(e).into_response(),
        };
    };
    let new = NewReply {
        text,
        attachments: Vec::new(),
    };
    let fingerprint = json!({"thread": &id, "body": new});
    match forms::run(
        &v,
        &fields,
        "message-reply",
        &fingerprint,
        StatusCode::CREATED,
        async |ctx, idem| messages::reply(ctx, &id, &new, idem).await,
    )
    .await
    {
        Ok(_) => see_other(&v.chrome.base, &format!("/messages/{id}?done=reply")),
        Err(e) if e.status == StatusCode::NOT_FOUND => v.error(e).into_response(),
        Err(e) => match messages::read_thread(v.ctx(), &id).await {
            Ok(t) => {
                let field = (e.code == "text_too_long").then_some("text");
                thread_page(
                    &v,
                    &t,
                    &fields,
                    &key,
                    Errors::from_api(l, field, &e),
                    Errors::status(&e),
                )
            }
            Err(e) => v.error(e).into_response(),
        },
    }
}
