//! Reads pipelined HTTP/1.1 answers off one connection's byte stream, in order: the status
//! line and headers with `httparse`, the body by `Content-Length` (cphub's answers to a
//! heartbeat are sized, never chunked). Pure, so it is tested with byte inputs.

/// Enough for cphub's answer heads; a longer head means the stream is not what we think.
const MAX_HEAD: usize = 16 * 1024;
const MAX_HEADERS: usize = 32;

/// One answer taken off the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    /// `Connection: close`: the server answers nothing more on this connection.
    pub close: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReadError {
    #[error("malformed HTTP answer: {0}")]
    Malformed(#[from] httparse::Error),
    #[error("HTTP answer without Content-Length (chunked or read-to-close bodies are not read)")]
    NoContentLength,
    #[error("HTTP answer with an unreadable Content-Length")]
    BadContentLength,
    #[error("HTTP answer head longer than {MAX_HEAD} bytes")]
    HeadTooLong,
}

/// The bytes read and not yet parsed; `start` is where the next answer begins.
#[derive(Debug, Default)]
pub struct ResponseReader {
    buf: Vec<u8>,
    start: usize,
}

impl ResponseReader {
    /// The buffer to read more bytes into (append only). The answers already taken are
    /// dropped first, so it holds at most one partial answer plus what is read next.
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.reserve(16 * 1024);
        &mut self.buf
    }

    /// The next whole answer, None if more bytes are needed.
    pub fn next_answer(&mut self) -> Result<Option<Answer>, ReadError> {
        let bytes = &self.buf[self.start..];
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut headers);
        let head = match response.parse(bytes)? {
            httparse::Status::Complete(head) => head,
            httparse::Status::Partial if bytes.len() > MAX_HEAD => {
                return Err(ReadError::HeadTooLong);
            }
            httparse::Status::Partial => return Ok(None),
        };
        let (length, close) = framing(response.headers)?;
        if bytes.len() < head + length {
            return Ok(None);
        }
        self.start += head + length;
        let status = response.code.unwrap_or_default();
        Ok(Some(Answer { status, close }))
    }
}

/// The body's length and whether the server closes after this answer.
fn framing(headers: &[httparse::Header<'_>]) -> Result<(usize, bool), ReadError> {
    let mut length = None;
    let mut close = false;
    for header in headers {
        if header.name.eq_ignore_ascii_case("content-length") {
            let text =
                std::str::from_utf8(header.value).map_err(|_| ReadError::BadContentLength)?;
            let value = text
                .trim()
                .parse()
                .map_err(|_| ReadError::BadContentLength)?;
            length = Some(value);
        } else if header.name.eq_ignore_ascii_case("connection") {
            close |= header.value.eq_ignore_ascii_case(b"close");
        }
    }
    Ok((length.ok_or(ReadError::NoContentLength)?, close))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &[u8] =
        b"HTTP/1.1 200 OK\r\ncontent-length: 15\r\ncontent-type: application/json\r\n\r\n{\"status\":\"ok\"}";

    fn feed(reader: &mut ResponseReader, bytes: &[u8]) {
        reader.buffer().extend_from_slice(bytes);
    }

    fn drain(reader: &mut ResponseReader) -> Vec<Answer> {
        std::iter::from_fn(|| reader.next_answer().unwrap()).collect()
    }

    #[test]
    fn pipelined_answers_split_anywhere_across_reads_come_out_whole_and_in_order() {
        let refused = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 2\r\n\r\n{}";
        let stream = [OK, refused.as_slice(), OK].concat();
        for split in [1, 7, 17, 60, 85, stream.len() - 1] {
            let mut reader = ResponseReader::default();
            let mut answers = Vec::new();
            for chunk in stream.chunks(split) {
                feed(&mut reader, chunk);
                answers.extend(drain(&mut reader));
            }
            let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
            assert_eq!(statuses, [200, 400, 200], "reads of {split} bytes");
            assert!(answers.iter().all(|a| !a.close));
        }
    }

    #[test]
    fn a_body_not_yet_read_whole_waits_for_its_last_byte() {
        let mut reader = ResponseReader::default();
        feed(&mut reader, &OK[..OK.len() - 1]);
        assert_eq!(reader.next_answer(), Ok(None));
        feed(&mut reader, &OK[OK.len() - 1..]);
        assert_eq!(drain(&mut reader).len(), 1);
    }

    #[test]
    fn connection_close_is_reported_with_its_answer() {
        let mut reader = ResponseReader::default();
        feed(
            &mut reader,
            b"HTTP/1.1 503 Service Unavailable\r\nConnection: Close\r\ncontent-length: 0\r\n\r\n",
        );
        let answer = reader.next_answer().unwrap();
        assert_eq!(
            answer,
            Some(Answer {
                status: 503,
                close: true
            })
        );
    }

    #[test]
    fn malformed_or_unframed_answers_are_errors_not_guesses() {
        let cases: [(&[u8], ReadError); 4] = [
            (
                b"HTTP/1.1 2x0 OK\r\n\r\n",
                ReadError::Malformed(httparse::Error::Status),
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                ReadError::NoContentLength,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
                ReadError::BadContentLength,
            ),
            (
                b"SSH-2.0-OpenSSH_9.6\r\n",
                ReadError::Malformed(httparse::Error::Version),
            ),
        ];
        for (bytes, expected) in cases {
            let mut reader = ResponseReader::default();
            feed(&mut reader, bytes);
            assert_eq!(
                reader.next_answer(),
                Err(expected),
                "{}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn a_head_that_never_ends_is_refused_once_it_passes_the_limit() {
        let mut reader = ResponseReader::default();
        feed(&mut reader, b"HTTP/1.1 200 OK\r\nX-Pad: ");
        assert_eq!(reader.next_answer(), Ok(None));
        feed(&mut reader, &vec![b'a'; MAX_HEAD]);
        assert_eq!(reader.next_answer(), Err(ReadError::HeadTooLong));
    }
}
