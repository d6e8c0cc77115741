//! Identifiers as reported by the phones. Huawei's ids are 32 hex characters; cphub accepts a
//! little more (other engines, hand-configured phones) but never anything that could smuggle
//! control characters into logs or exceed a column.

use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};

use super::{ParseError, Problem};

/// What `parse_id` accepts, for the OpenAPI document: clients and fuzzers read the rule
/// there instead of learning it from 400s.
const ID_PATTERN: &str = "^[A-Za-z0-9_.:-]+$";

fn id_schema(max: usize) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(ID_PATTERN))
        .min_length(Some(1))
        .max_length(Some(max))
        .into()
}

fn parse_id(field: &'static str, raw: String, max: usize) -> Result<String, ParseError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-');
    if raw.is_empty() {
        Err(ParseError::new(field, Problem::Empty))
    } else if raw.len() > max {
        Err(ParseError::new(field, Problem::TooLong(max)))
    } else if !raw.chars().all(allowed) {
        Err(ParseError::new(field, Problem::BadCharacters))
    } else {
        Ok(raw)
    }
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $max:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub const MAX_LEN: usize = $max;

            pub fn parse(field: &'static str, raw: String) -> Result<Self, ParseError> {
                parse_id(field, raw, Self::MAX_LEN).map($name)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        /// For rows read back from the book (`#[sqlx(try_from = "String")]`): what was
        /// stored was parsed on the way in, so a failure here means a corrupt row.
        impl TryFrom<String> for $name {
            type Error = ParseError;

            fn try_from(raw: String) -> Result<Self, Self::Error> {
                $name::parse("stored id", raw)
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                id_schema(Self::MAX_LEN)
            }
        }

        impl utoipa::ToSchema for $name {}

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.pad(&self.0)
            }
        }
    };
}

id_type!(
    /// A cloud phone's id (`phone_id` in chapter 4 and 6).
    PhoneId,
    64
);
id_type!(
    /// A game session's id: minted by cphub, or chosen by the platform in direct mode.
    SessionId,
    64
);
id_type!(
    /// An application (game) id; may be a package name such as `com.example.game`.
    AppId,
    128
);

id_type!(
    /// The operator platform's id of a player.
    UserId,
    128
);

id_type!(
    /// The `Idempotency-Key` header of a mint: the platform's name for one attempt to start
    /// a game, repeated on its retries. A UUID fits.
    IdempotencyKey,
    128
);

id_type!(
    /// A place in the wait queue: minted by cphub (32 lowercase hex characters).
    QueueId,
    64
);

id_type!(
    /// A webhook event's id, stable for the fact (`evt_<type>_<subject>…`, docs/webhooks.md):
    /// built from a type and ids of at most 64 characters, so 160 leaves room.
    WebhookEventId,
    160
);

/// The phone's free-text error description (6.2, 6.3: no length set). Bounded, but never
/// refused: an event refused over its description is sent again and refused again, and the
/// session's billing is lost. A longer one is cut at a character boundary and says so. Any
/// NUL character is replaced by U+FFFD: PostgreSQL cannot store NUL in text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorMsg {
    text: String,
    truncated: bool,
}

impl ErrorMsg {
    /// In characters, not bytes.
    pub const MAX_LEN: usize = 1024;

    pub fn bounded(mut raw: String) -> Self {
        let cut = raw.char_indices().nth(Self::MAX_LEN).map(|(at, _)| at);
        if let Some(at) = cut {
            raw.truncate(at);
        }
        if raw.contains('\0') {
            raw = raw.replace('\0', "\u{FFFD}");
        }
        ErrorMsg {
            text: raw,
            truncated: cut.is_some(),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the phone sent more than [`ErrorMsg::MAX_LEN`] characters.
    pub fn truncated(&self) -> bool {
        self.truncated
    }
}

impl serde::Serialize for ErrorMsg {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl utoipa::PartialSchema for ErrorMsg {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .max_length(Some(Self::MAX_LEN))
            .into()
    }
}

impl utoipa::ToSchema for ErrorMsg {}

#[cfg(test)]
mod tests {
    /// The CLI's tables align ids with `{:<34}`: Display must honour the width.
    #[test]
    fn display_pads_to_the_asked_width() {
        let id = PhoneId::parse("phone_id", "p-1".to_owned()).unwrap();
        assert_eq!(format!("{id:<6}|"), "p-1   |");
    }

    use super::*;

    #[test]
    fn accepts_huawei_ids_and_package_names() {
        assert!(PhoneId::parse("p", "a7f3a1c5258347d6b6f1def79e11f2bc".into()).is_ok());
        assert!(AppId::parse("a", "com.example.game_2-x:1".into()).is_ok());
    }

    #[test]
    fn refuses_empty_long_and_odd_ids() {
        let cases: [(String, Problem); 5] = [
            (String::new(), Problem::Empty),
            ("x".repeat(65), Problem::TooLong(64)),
            ("a b".into(), Problem::BadCharacters),
            ("a\nb".into(), Problem::BadCharacters),
            ("é".into(), Problem::BadCharacters),
        ];
        for (raw, problem) in cases {
            let err = PhoneId::parse("event.phone_id", raw.clone()).unwrap_err();
            assert_eq!(err.problem, problem, "input {raw:?}");
        }
    }

    #[test]
    fn error_msg_is_bounded_in_characters_not_bytes() {
        let fits = ErrorMsg::bounded("é".repeat(1024));
        assert_eq!(
            (fits.as_str().chars().count(), fits.truncated()),
            (1024, false)
        );
        let long = ErrorMsg::bounded(format!("{}€😀tail", "x".repeat(1022)));
        assert!(long.truncated());
        assert_eq!(long.as_str(), format!("{}€😀", "x".repeat(1022)));
        let nul = ErrorMsg::bounded("a\0b".to_owned());
        assert_eq!((nul.as_str(), nul.truncated()), ("a\u{FFFD}b", false));
    }
}
