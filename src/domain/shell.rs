//! A command for a phone's ADB shell through the synchronous command API (chapter 4.7.5),
//! checked against that API's limits before any call, and what one run of it gave.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// 4.7.5: `content` "can contain a maximum of 1024 bytes".
pub const MAX_COMMAND_BYTES: usize = 1024;
/// 4.7.5 (Table 4-68): `execute_msg` "can contain a maximum of 1024 bytes".
pub const MAX_OUTPUT_BYTES: usize = 1024;

/// Why a command cannot be sent (4.7.5's limits on `content`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShellCommandError {
    #[error("the command is empty")]
    Empty,
    #[error(
        "the command is {0} bytes; the synchronous command API (4.7.5) takes at most {MAX_COMMAND_BYTES}"
    )]
    TooLong(usize),
    #[error(
        "the command contains {0:?} (byte {1}); the synchronous command API (4.7.5) takes only \
         letters, digits, spaces and _ . / : -"
    )]
    Forbidden(char, usize),
}

/// A command within 4.7.5's limits: at most 1,024 bytes of letters, digits, `_ . / : -`,
/// and spaces. The table's list has no space, yet its own example request is
/// `"ls -l /system"`, and no shell command with an argument could be written without one:
/// the space is taken as allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellCommand(String);

impl ShellCommand {
    pub fn parse(text: &str) -> Result<ShellCommand, ShellCommandError> {
        if text.trim().is_empty() {
            return Err(ShellCommandError::Empty);
        }
        if text.len() > MAX_COMMAND_BYTES {
            return Err(ShellCommandError::TooLong(text.len()));
        }
        if let Some((at, c)) = text.char_indices().find(|(_, c)| !allowed(*c)) {
            return Err(ShellCommandError::Forbidden(c, at));
        }
        Ok(ShellCommand(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | ':' | '-' | ' ')
}

/// How one run of a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CommandOutcome {
    /// The job's status 2 (Table 4-68).
    Succeeded,
    /// The job's status -1: the command ran and failed (its output is kept all the same).
    Failed,
    /// No answer within the time cphub gives it.
    TimedOut,
    /// The call itself failed (refused, unreachable, no job for the phone).
    Error,
}

/// One command run on a phone and what it gave: the output as the API returned it (at most
/// [`MAX_OUTPUT_BYTES`]) and, when it did not succeed, why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CommandRun {
    pub command: String,
    pub outcome: CommandOutcome,
    pub output: Option<String>,
    pub error: Option<String>,
}

impl CommandRun {
    /// A run without an answer (`TimedOut`, `Error`).
    pub fn unanswered(command: &ShellCommand, outcome: CommandOutcome, error: String) -> Self {
        CommandRun {
            command: command.as_str().to_owned(),
            outcome,
            output: None,
            error: Some(error),
        }
    }
}

/// `text` cut to at most `max` bytes on a character boundary: a longer output than the
/// reference allows is not kept whole.
pub fn truncate_bytes(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 4.7.5: the example's `ls -l /system` is taken; 1,024 bytes are, 1,025 are not; any
    /// character outside the list is refused with where it is.
    #[test]
    fn commands_within_the_limits_of_4_7_5_only() {
        assert!(ShellCommand::parse("ls -l /system").is_ok());
        assert!(ShellCommand::parse("getprop sys.boot_completed").is_ok());
        assert!(ShellCommand::parse(&"a".repeat(1024)).is_ok());
        assert_eq!(
            ShellCommand::parse(&"a".repeat(1025)),
            Err(ShellCommandError::TooLong(1025))
        );
        assert_eq!(ShellCommand::parse("  "), Err(ShellCommandError::Empty));
        assert_eq!(
            ShellCommand::parse("ls; rm -rf /"),
            Err(ShellCommandError::Forbidden(';', 2))
        );
        for bad in ["cat a|b", "echo $HOME", "a && b", "x>y", "é", "a\nb", "a=b"] {
            assert!(ShellCommand::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn outputs_are_cut_on_a_character_boundary() {
        assert_eq!(truncate_bytes("abcdef", 4), "abcd");
        assert_eq!(truncate_bytes("ééé", 3), "é");
        assert_eq!(truncate_bytes("ab", 1024), "ab");
    }
}
