//! Validation of one level's header edits (`request_headers_to_add` / `_remove`,
//! `response_headers_to_add` / `_remove` on a listener, virtual host or route): every bad name,
//! value or action reported with its field path, the rest compiled (crate::header_edit).

use std::sync::Arc;

use super::file::RawHeaderValueOption;
use crate::header_edit::{Add, AppendAction, Edits, HeaderEdits, Purpose, Value, check_name};

/// One level's raw keys.
pub(super) struct RawLevel<'a> {
    pub(super) request_add: &'a Option<Vec<RawHeaderValueOption>>,
    pub(super) request_remove: &'a Option<Vec<String>>,
    pub(super) response_add: &'a Option<Vec<RawHeaderValueOption>>,
    pub(super) response_remove: &'a Option<Vec<String>>,
}

/// Checks and compiles one level's edits; `prefix` is the level's path with a trailing `.`
/// (or empty). None when the level edits nothing. Errors go to `err(path, reason)`.
impl RawLevel<'_> {
    /// No list given at all (most routes): nothing to check or build.
    pub(super) fn is_unset(&self) -> bool {
        self.request_add.is_none()
            && self.request_remove.is_none()
            && self.response_add.is_none()
            && self.response_remove.is_none()
    }
}

pub(super) fn level(
    raw: RawLevel<'_>,
    prefix: &str,
    err: &mut dyn FnMut(&str, String),
) -> Option<Arc<HeaderEdits>> {
    let edits = HeaderEdits {
        request: direction(raw.request_add, raw.request_remove, "request", prefix, err),
        response: direction(
            raw.response_add,
            raw.response_remove,
            "response",
            prefix,
            err,
        ),
    };
    (!edits.is_empty()).then(|| Arc::new(edits))
}

fn direction(
    add: &Option<Vec<RawHeaderValueOption>>,
    remove: &Option<Vec<String>>,
    which: &str,
    prefix: &str,
    err: &mut dyn FnMut(&str, String),
) -> Edits {
    let mut edits = Edits::default();
    for (i, name) in remove.iter().flatten().enumerate() {
        match check_name(name, Purpose::Remove) {
            Ok(name) => edits.remove.push(name),
            Err(why) => err(&format!("{prefix}{which}_headers_to_remove[{i}]"), why),
        }
    }
    for (i, option) in add.iter().flatten().enumerate() {
        let p = format!("{prefix}{which}_headers_to_add[{i}]");
        let Some(header) = &option.header else {
            err(&p, "`header: {key, value}` is required".into());
            continue;
        };
        let name = check_name(&header.key, Purpose::Add)
            .map_err(|why| err(&format!("{p}.header.key"), why))
            .ok();
        let value = Value::compile(&header.value)
            .map_err(|why| err(&format!("{p}.header.value"), why))
            .ok();
        let action = match (&option.append_action, option.append) {
            (Some(_), Some(_)) => {
                let why = "set `append_action` or the older `append`, not both";
                err(&format!("{p}.append"), why.into());
                None
            }
            (Some(raw), None) => AppendAction::parse(raw)
                .map_err(|why| err(&format!("{p}.append_action"), why))
                .ok(),
            (None, Some(true)) | (None, None) => Some(AppendAction::AppendIfExistsOrAdd),
            (None, Some(false)) => Some(AppendAction::OverwriteIfExistsOrAdd),
        };
        if let (Some(name), Some(value), Some(action)) = (name, value, action) {
            edits.add.push(Add {
                name,
                value,
                action,
                keep_empty_value: option.keep_empty_value.unwrap_or(false),
            });
        }
    }
    edits
}
