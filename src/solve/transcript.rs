//! The text of one sample's transcript: where a fenced ```python block is complete, whether
//! the thinking is still open, a reply without the prefill a server echoed back, and the
//! [`Watcher`] that uses them to stop a stream at the right delta.

use super::client::Completion;

/// What opens a code block to run (at the start of a line).
const OPEN_FENCES: [&str; 3] = ["```python\n", "```py\n", "```python3\n"];
/// What opens a `search_similar_problems` request (`--tools retrieve`): the query inside.
pub const SEARCH_FENCES: [&str; 2] = ["```search\n", "```search_similar_problems\n"];

/// Decides, delta by delta, whether the stream should stop: a complete code block to run, or
/// the thinking budget spent with the thinking still open.
pub(super) struct Watcher<'p> {
    prefill: &'p str,
    tools: bool,
    /// Also stop at a complete ```search block.
    search: bool,
    budget: Option<usize>,
    /// Deltas seen (about one token each).
    pub events: usize,
    /// The thinking budget ran out with the thinking still open.
    pub over_budget: bool,
    closed: bool,
    /// Bytes of content and reasoning already looked at.
    seen: (usize, usize),
}

impl<'p> Watcher<'p> {
    pub fn new(prefill: &'p str, tools: bool, budget: Option<usize>) -> Self {
        Self {
            prefill,
            tools,
            search: false,
            budget,
            events: 0,
            over_budget: false,
            closed: thinking_closed(prefill),
            seen: (0, 0),
        }
    }

    /// Stop at complete ```search blocks too (`--tools retrieve`, fenced).
    pub fn with_search(mut self, search: bool) -> Self {
        self.search = search;
        self
    }

    pub fn stop(&mut self, c: &Completion, events: usize) -> bool {
        self.events = events;
        // Only a delta holding a backtick can complete a fence: skip the scan otherwise, so a
        // long stream costs linear time. Both texts only grow, so the old lengths are char
        // boundaries.
        let reasoning = c.reasoning.as_deref().unwrap_or("");
        let fresh = |text: &str, seen: usize| text.get(seen..).is_some_and(|t| t.contains('`'));
        let fence = (self.tools || self.search)
            && (fresh(&c.content, self.seen.0) || fresh(reasoning, self.seen.1));
        self.seen = (c.content.len(), reasoning.len());
        let spent = !self.closed && self.budget.is_some_and(|b| events >= b);
        if !fence && !spent {
            return false;
        }
        let raw = round_text(c, open_think(self.prefill));
        let new = strip_echo(self.prefill, &raw);
        if spent {
            if thinking_closed(&format!("{}{new}", self.prefill)) {
                self.closed = true;
            } else {
                self.over_budget = true;
                return true;
            }
        }
        fence
            && ((self.tools && find_block(new).is_some())
                || (self.search && find_fenced(new, &SEARCH_FENCES).is_some()))
    }
}

/// A round's text as the model wrote it: servers with a reasoning parser send the thinking
/// separately (without its tags); put it back inside `<think>` unless the transcript already
/// has the thinking open.
pub fn round_text(c: &Completion, in_think: bool) -> String {
    let r = c.reasoning.as_deref().unwrap_or("");
    if r.is_empty() {
        return c.content.clone();
    }
    let open = if in_think { "" } else { "<think>" };
    match c.content.is_empty() {
        true => format!("{open}{r}"),
        false => format!("{open}{r}</think>{}", c.content),
    }
}

/// The reply without a repeated prefill: llama.cpp repeats it (non-streamed, or streamed
/// without `continue_final_message`), possibly without the leading `<think>` when its reasoning
/// parser took the tag; vLLM sends only the new text.
pub fn strip_echo<'a>(prefill: &str, reply: &'a str) -> &'a str {
    if prefill.is_empty() {
        return reply;
    }
    let bare = prefill.strip_prefix("<think>").unwrap_or(prefill);
    for p in [prefill, bare, bare.trim_start()] {
        if !p.is_empty() {
            if let Some(rest) = reply.strip_prefix(p) {
                return rest;
            }
        }
    }
    reply
}

/// Whether the text has a `<think>` that is not closed yet.
pub fn open_think(text: &str) -> bool {
    match (text.rfind("<think>"), text.rfind("</think>")) {
        (Some(o), Some(c)) => o > c,
        (Some(_), None) => true,
        _ => false,
    }
}

/// Whether the thinking is over: a `</think>` after the last `<think>` (templates that open
/// the thinking in the prompt only ever show the closing tag).
pub fn thinking_closed(text: &str) -> bool {
    match (text.rfind("<think>"), text.rfind("</think>")) {
        (Some(o), Some(c)) => c > o,
        (None, Some(_)) => true,
        _ => false,
    }
}

/// The first complete fenced python block: its code and the byte offset just after its
/// closing fence.
pub fn find_block(text: &str) -> Option<(String, usize)> {
    find_fenced(text, &OPEN_FENCES)
}

/// The first complete block opened by one of `fences` at a line start: its body and the byte
/// offset just after its closing fence.
pub fn find_fenced(text: &str, fences: &[&str]) -> Option<(String, usize)> {
    let mut from = 0;
    while from < text.len() {
        let (start, fence) = fences
            .iter()
            .filter_map(|f| text[from..].find(f).map(|i| (from + i, *f)))
            .min_by_key(|(i, _)| *i)?;
        let at_line_start = start == 0 || text[..start].ends_with('\n');
        let body = start + fence.len();
        if !at_line_start {
            from = body;
            continue;
        }
        // The first line starting with ``` closes it (markdown has no nesting).
        let close = if text[body..].starts_with("```") {
            Some(body)
        } else {
            text[body..].find("\n```").map(|i| body + i + 1)
        }?;
        return Some((text[body..close].trim_end().to_string(), close + 3));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_first_complete_block_at_a_line_start() {
        let t = "so:\n```python\nx = 41\nprint(x)\n```\nmore ```python\nno\n```";
        let (code, end) = find_block(t).unwrap();
        assert_eq!(code, "x = 41\nprint(x)");
        assert_eq!(&t[..end], "so:\n```python\nx = 41\nprint(x)\n```");
        assert!(find_block("```python\nx = 1\n").is_none(), "not closed yet");
        assert!(
            find_block("text ```python\nx\n```").is_none(),
            "not at a line start"
        );
        assert_eq!(find_block("```py\n```").unwrap().0, "");
    }

    #[test]
    fn echoes_are_stripped_and_thinking_tracked() {
        let pre = "<think>\nplan\n```python\n1\n```\n```output\n1\n```\n";
        assert_eq!(strip_echo(pre, &format!("{pre}next")), "next");
        assert_eq!(strip_echo(pre, &format!("{}next", &pre[7..])), "next");
        assert_eq!(strip_echo(pre, "next"), "next");
        assert!(open_think(pre) && !thinking_closed(pre));
        assert!(thinking_closed("a</think>b") && !open_think("a</think>b"));
        let c = Completion {
            reasoning: Some("r".into()),
            content: "c".into(),
            ..Default::default()
        };
        assert_eq!(round_text(&c, false), "<think>r</think>c");
        assert_eq!(round_text(&c, true), "r</think>c");
    }
}
