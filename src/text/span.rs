//! Which tokens of a rendered chat are scored: the two conventions of the reference implementations
//! (`../shared/REFERENCES.md`).
//!
//! - [`SpanMode::Turn`], the LARK authors' (`lark/score_lark.py`, `tokenise_record`): full = template(chat,
//!   add_generation_prompt=False), prompt = template(chat without the assistant turn, add_generation_prompt=True),
//!   both `tokenizer(text, truncation=True, max_length=M)`; scored = `[len(prompt), len(full))`, the whole
//!   assistant turn with its end-of-turn marker and whatever the template writes after it; skipped when
//!   `len(prompt) >= len(full) - 1`. Only lengths are used, so when the prompt's ids are not a prefix of the
//!   full ids (a token merged across the boundary) the span is still taken by position, and flagged.
//! - [`SpanMode::Content`], the RSR authors' (`rsr_cal.py`): ids = `apply_chat_template(chat, tokenize=True)`
//!   (the rendering tokenised *without* added special tokens), truncated at M; scored = the tokens strictly
//!   between the assistant header and the end marker, found by their token ids; with no end marker (truncated),
//!   to the end. The end marker is not scored.

use crate::backend::SeqRequest;
use crate::error::{LarkError, Result};

use super::tokenizer::Tokenizer;

/// The reference scorers' truncation length.
pub const DEFAULT_MAX_LEN: usize = 32768;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpanMode {
    /// The whole assistant turn, as the LARK authors score it (default).
    #[default]
    Turn,
    /// Only the assistant content, as the RSR authors score it.
    Content,
}

impl SpanMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SpanMode::Turn => "turn",
            SpanMode::Content => "content",
        }
    }
}

impl std::fmt::Display for SpanMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for SpanMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "turn" => Ok(SpanMode::Turn),
            "content" => Ok(SpanMode::Content),
            _ => Err(format!("unknown span mode `{s}` (turn, content)")),
        }
    }
}

/// Chat-template families whose assistant markers [`SpanMode::Content`] knows (the RSR authors' list).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateFamily {
    /// `<|im_start|>assistant\n` ... `<|im_end|>` (Qwen, SmolLM2).
    ChatMl,
    /// `<|start_header_id|>assistant<|end_header_id|>\n\n` ... `<|eot_id|>`.
    Llama3,
}

impl TemplateFamily {
    /// (assistant header, end marker) as text; their ids come from tokenising these, as `rsr_cal.py` does.
    pub fn markers(self) -> (&'static str, &'static str) {
        match self {
            TemplateFamily::ChatMl => ("<|im_start|>assistant\n", "<|im_end|>"),
            TemplateFamily::Llama3 => ("<|start_header_id|>assistant<|end_header_id|>\n\n", "<|eot_id|>"),
        }
    }

    /// The family whose marker tokens the tokenizer has and the template writes. `origin` names the template in
    /// the error.
    pub fn detect(tokenizer: &Tokenizer, template_source: &str, origin: &str) -> Result<Self> {
        let has = |toks: &[&str]| {
            toks.iter().all(|t| tokenizer.token_to_id(t).is_some()) && template_source.contains(toks[0])
        };
        let chatml = has(&["<|im_start|>", "<|im_end|>"]);
        let llama3 = has(&["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]);
        match (chatml, llama3) {
            (true, false) => Ok(TemplateFamily::ChatMl),
            (false, true) => Ok(TemplateFamily::Llama3),
            (true, true) => Err(LarkError::Unsupported(format!(
                "--span content: the chat template {origin} writes both ChatML and Llama 3 markers; cannot tell \
                 which marks the assistant turn"
            ))),
            (false, false) => Err(LarkError::Unsupported(format!(
                "--span content needs a ChatML (<|im_start|>/<|im_end|>) or Llama 3 \
                 (<|start_header_id|>/<|eot_id|>) chat template with those special tokens in {}; {origin} is \
                 neither (use --span turn)",
                tokenizer.path().display()
            ))),
        }
    }
}

/// Which assistant turns of a conversation are scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Turns {
    /// Every assistant turn, each with the whole conversation before it as context (default).
    #[default]
    All,
    /// Only the final assistant turn (the single-turn behaviour).
    Last,
}

impl Turns {
    pub fn as_str(self) -> &'static str {
        match self {
            Turns::All => "all",
            Turns::Last => "last",
        }
    }
}

impl std::fmt::Display for Turns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Turns {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "all" => Ok(Turns::All),
            "last" => Ok(Turns::Last),
            _ => Err(format!("unknown turns `{s}` (all, last)")),
        }
    }
}

/// A tokenised trajectory and its scored positions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trajectory {
    /// The whole (truncated) token sequence.
    pub ids: Vec<u32>,
    /// The scored positions lie in `score_from..score_to` (the first turn's start to the last turn's end), each
    /// with gold token `ids[t]`; `1 <= score_from < score_to`. The backend runs this covering range.
    pub score_from: usize,
    pub score_to: usize,
    /// The scored ranges, one per scored assistant turn, in order, disjoint, non-empty, covering `score_from` and
    /// `score_to`: `[(score_from, score_to)]` for a single turn. Positions between them (user and tool messages,
    /// headers) are context only.
    pub turns: Vec<(usize, usize)>,
    /// The sequence was cut at the maximum length.
    pub truncated: bool,
    /// Turn: length of the (truncated) tokenised prompt. Content: number of tokens before the content.
    pub prompt_len: usize,
    /// `ids.len()`.
    pub full_len: usize,
    /// Length of the full sequence before truncation.
    pub untruncated_len: usize,
    /// Turn: whether the prompt's ids are a prefix of the full ids (the span is positional either way, as in
    /// the authors' code). Content: always true.
    pub prompt_is_prefix: bool,
    /// Content: assistant spans found before the scored (last) one, which `rsr_cal.py` would also have scored;
    /// 0 for a well-formed single-turn chat. Turn: 0.
    pub other_spans: usize,
}

impl Trajectory {
    /// What the backend consumes: the ids up to the last turn's end (later tokens cannot influence it), with
    /// statistics asked for the covering range `score_from..score_to`; [`Trajectory::keep_scored`] keeps the
    /// turns' positions of them. Per-token statistics depend only on the ids before the position, so this is
    /// exact; the cost is the LM head and reductions on the context positions between turns.
    pub fn request(&self) -> SeqRequest<'_> {
        SeqRequest { ids: &self.ids[..self.score_to], score_from: self.score_from }
    }
    /// Scored positions (all turns).
    pub fn n_scored(&self) -> usize {
        self.turns.iter().map(|(a, b)| b - a).sum()
    }
    /// Positions the backend computes statistics for (`score_to - score_from`).
    pub fn n_covered(&self) -> usize {
        self.score_to - self.score_from
    }
    pub fn n_turns(&self) -> usize {
        self.turns.len()
    }
    /// From per-position values over the covering range (`n_covered` of them), those of the scored turns.
    pub fn keep_scored<T>(&self, covered: Vec<T>) -> Vec<T> {
        if self.turns.len() == 1 {
            return covered;
        }
        let mut keep = vec![false; covered.len()];
        for &(a, b) in &self.turns {
            for k in keep.iter_mut().take(b - self.score_from).skip(a - self.score_from) {
                *k = true;
            }
        }
        covered.into_iter().zip(keep).filter(|(_, k)| *k).map(|(v, _)| v).collect()
    }
    /// The gold ids of the scored positions.
    pub fn scored_ids(&self) -> Vec<u32> {
        self.turns.iter().flat_map(|&(a, b)| self.ids[a..b].iter().copied()).collect()
    }
}

/// Why a trajectory has no span to score. Reported with the record, never replaced by an invented score.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// Turn: `len(prompt) >= len(full) - 1` after truncation (the LARK authors' rule): fewer than 2 tokens of
    /// assistant turn, usually because truncation reached into the prompt.
    PromptNotShorter { prompt_len: usize, full_len: usize, truncated: bool },
    /// Content: no assistant header followed by at least one token in the (truncated) ids. Truncation before the
    /// content, an empty content, or a content whose first token merged with the header's last.
    NoAssistantContent { full_len: usize, truncated: bool },
}

impl SkipReason {
    /// A short stable code for output files.
    pub fn code(&self) -> &'static str {
        match self {
            SkipReason::PromptNotShorter { .. } => "prompt_not_shorter",
            SkipReason::NoAssistantContent { .. } => "no_assistant_content",
        }
    }
    pub fn truncated(&self) -> bool {
        match self {
            SkipReason::PromptNotShorter { truncated, .. } | SkipReason::NoAssistantContent { truncated, .. } => {
                *truncated
            }
        }
    }
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cut = |t: bool| if t { " (truncated)" } else { "" };
        match self {
            SkipReason::PromptNotShorter { prompt_len, full_len, truncated } => write!(
                f,
                "prompt_not_shorter: {prompt_len} prompt tokens vs {full_len} tokens in all{}, fewer than 2 to score",
                cut(*truncated)
            ),
            SkipReason::NoAssistantContent { full_len, truncated } => write!(
                f,
                "no_assistant_content: no assistant header followed by content in {full_len} tokens{}",
                cut(*truncated)
            ),
        }
    }
}

/// A trajectory ready to score, or the reason it is skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prepared {
    Ready(Trajectory),
    Skipped(SkipReason),
}

impl Prepared {
    pub fn ready(&self) -> Option<&Trajectory> {
        match self {
            Prepared::Ready(t) => Some(t),
            Prepared::Skipped(_) => None,
        }
    }
    pub fn into_ready(self) -> std::result::Result<Trajectory, SkipReason> {
        match self {
            Prepared::Ready(t) => Ok(t),
            Prepared::Skipped(r) => Err(r),
        }
    }
}

/// [`SpanMode::Turn`] from the two renderings (module doc).
pub fn turn_span(tokenizer: &Tokenizer, full_text: &str, prompt_text: &str, max_len: usize) -> Result<Prepared> {
    let full = tokenizer.encode_with(full_text, true, Some(max_len))?;
    let prompt = tokenizer.encode_with(prompt_text, true, Some(max_len))?;
    let (prompt_len, full_len) = (prompt.ids.len(), full.ids.len());
    let truncated = full.truncated();
    if prompt_len + 1 >= full_len {
        return Ok(Prepared::Skipped(SkipReason::PromptNotShorter { prompt_len, full_len, truncated }));
    }
    Ok(Prepared::Ready(Trajectory {
        prompt_is_prefix: full.ids.starts_with(&prompt.ids),
        ids: full.ids,
        score_from: prompt_len,
        score_to: full_len,
        turns: vec![(prompt_len, full_len)],
        truncated,
        prompt_len,
        full_len,
        untruncated_len: full.untruncated_len,
        other_spans: 0,
    }))
}

/// `rsr_utils._scan_response_positions` as ranges: every header .. end-marker span (to the end of `ids` when
/// the end marker is missing), in order, empty ones dropped.
pub fn scan_assistant_spans(ids: &[u32], header: &[u32], end: &[u32]) -> Vec<(usize, usize)> {
    let (n, h, e) = (ids.len(), header.len(), end.len());
    let mut spans = Vec::new();
    if h == 0 {
        return spans;
    }
    let mut i = 0;
    while i + h <= n {
        if ids[i..i + h] == *header {
            let st = i + h;
            let mut j = st;
            let mut found_end = false;
            while j + e <= n {
                if e > 0 && ids[j..j + e] == *end {
                    found_end = true;
                    break;
                }
                j += 1;
            }
            let ed = if found_end { j } else { n };
            if ed > st {
                spans.push((st, ed));
            }
            i = if found_end { j + e } else { n };
        } else {
            i += 1;
        }
    }
    spans
}

/// [`SpanMode::Content`] from the full rendering (module doc). The last non-empty assistant span is scored; a
/// validated chat has exactly one.
pub fn content_span(
    tokenizer: &Tokenizer,
    family: TemplateFamily,
    full_text: &str,
    max_len: usize,
) -> Result<Prepared> {
    let (header_text, end_text) = family.markers();
    let header = tokenizer.encode_plain(header_text)?;
    let end = tokenizer.encode_plain(end_text)?;
    let full = tokenizer.encode_with(full_text, false, Some(max_len))?;
    let truncated = full.truncated();
    let spans = scan_assistant_spans(&full.ids, &header, &end);
    let Some(&(from, to)) = spans.last() else {
        return Ok(Prepared::Skipped(SkipReason::NoAssistantContent { full_len: full.ids.len(), truncated }));
    };
    Ok(Prepared::Ready(Trajectory {
        score_from: from,
        score_to: to,
        turns: vec![(from, to)],
        truncated,
        prompt_len: from,
        full_len: full.ids.len(),
        untruncated_len: full.untruncated_len,
        prompt_is_prefix: true,
        other_spans: spans.len() - 1,
        ids: full.ids,
    }))
}

/// One assistant turn found in a rendering's ids: its content `content.0..content.1` (strictly between the
/// header and the end marker) and `end`, the position after its end marker (`content.1` when the ids end first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocatedTurn {
    pub content: (usize, usize),
    pub end: usize,
}

/// Every header .. end-marker span of `ids`, in order, empty ones kept (the scan of
/// [`scan_assistant_spans`], which drops them).
pub fn locate_turns(ids: &[u32], header: &[u32], end: &[u32]) -> Vec<LocatedTurn> {
    let (n, h, e) = (ids.len(), header.len(), end.len());
    let mut out = Vec::new();
    if h == 0 || e == 0 {
        return out;
    }
    let mut i = 0;
    while i + h <= n {
        if ids[i..i + h] != *header {
            i += 1;
            continue;
        }
        let st = i + h;
        let mut j = st;
        while j + e <= n && ids[j..j + e] != *end {
            j += 1;
        }
        if j + e <= n {
            out.push(LocatedTurn { content: (st, j), end: j + e });
            i = j + e;
        } else {
            out.push(LocatedTurn { content: (st, n), end: n });
            i = n;
        }
    }
    out
}

/// Several assistant turns located in ONE rendering of the whole conversation (`full_text`), by the template
/// family's marker tokens: the rendering must show exactly `n_assistant` assistant headers (else the turns
/// cannot be told apart and the conversation is refused, never guessed). Per turn, [`SpanMode::Content`] scores
/// the content; [`SpanMode::Turn`] the content and the end marker, and the final turn as the single-turn
/// convention does, `[len(prompt), len(full))` with `prompt_text` the rendering of everything before the final
/// turn with the generation prompt. Truncation at `max_len` cuts the turns it reaches; turns it removes are
/// not scored; none left is a skip.
pub fn multi_turn_span(
    tokenizer: &Tokenizer,
    family: TemplateFamily,
    mode: SpanMode,
    full_text: &str,
    prompt_text: Option<&str>,
    n_assistant: usize,
    max_len: usize,
) -> Result<Prepared> {
    let (header_text, end_text) = family.markers();
    let header = tokenizer.encode_plain(header_text)?;
    let end = tokenizer.encode_plain(end_text)?;
    let special = mode == SpanMode::Turn;
    let full = tokenizer.encode_with(full_text, special, Some(max_len))?;
    let truncated = full.truncated();
    // Locate in the untruncated ids, so that the count check sees every turn.
    let whole;
    let all_ids = if truncated {
        whole = tokenizer.encode_with(full_text, special, None)?;
        &whole.ids
    } else {
        &full.ids
    };
    let located = locate_turns(all_ids, &header, &end);
    if located.len() != n_assistant {
        return Err(LarkError::Unsupported(format!(
            "the rendering shows {} assistant turns ({header_text:?} .. {end_text:?}) for {n_assistant} assistant \
             messages: the turns cannot be located in it (a message that contains the header text, or a template \
             that does not write every assistant turn); not scored (--turns last scores only the final turn)",
            located.len()
        )));
    }
    let n = full.ids.len();
    let mut turns: Vec<(usize, usize)> = Vec::with_capacity(located.len());
    let (mut prompt_len, mut prompt_is_prefix) = (located[0].content.0, true);
    for (k, t) in located.iter().enumerate() {
        let last = k + 1 == located.len();
        let (a, b) = match mode {
            SpanMode::Content => t.content,
            SpanMode::Turn if !last => (t.content.0, t.end),
            SpanMode::Turn => {
                let prompt = tokenizer.encode_with(prompt_text.unwrap_or_default(), true, Some(max_len))?;
                let p = prompt.ids.len();
                prompt_is_prefix = full.ids.starts_with(&prompt.ids);
                if turns.is_empty() {
                    prompt_len = p;
                }
                if let Some(&(_, prev)) = turns.last() {
                    if p < prev {
                        return Err(LarkError::Unsupported(format!(
                            "the prompt of the final assistant turn renders to {p} tokens, inside the previous \
                             turn (which ends at {prev}): the template rewrites the conversation before the final \
                             turn; use --span content"
                        )));
                    }
                }
                // The LARK authors' rule for the final turn: fewer than 2 tokens is nothing to score.
                if p + 1 >= n {
                    break;
                }
                (p, n)
            }
        };
        let (a, b) = (a.min(n), b.min(n));
        if a < b && a >= 1 {
            turns.push((a, b));
        }
    }
    let (Some(&(from, _)), Some(&(_, to))) = (turns.first(), turns.last()) else {
        return Ok(Prepared::Skipped(match mode {
            SpanMode::Turn => SkipReason::PromptNotShorter { prompt_len, full_len: n, truncated },
            SpanMode::Content => SkipReason::NoAssistantContent { full_len: n, truncated },
        }));
    };
    Ok(Prepared::Ready(Trajectory {
        score_from: from,
        score_to: to,
        turns,
        truncated,
        prompt_len: from,
        full_len: n,
        untruncated_len: full.untruncated_len,
        prompt_is_prefix,
        other_spans: 0,
        ids: full.ids,
    }))
}

/// The turns a template's `{% generation %}` blocks mark, as HF's `return_assistant_tokens_mask` marks them: for
/// each block's byte range `[s, e)` of `text`, the tokens from the one holding byte `s` to the one holding byte
/// `e - 1` (HF's `char_to_token`); a block whose start no token holds ends the list. The mask defines the turns
/// under both span conventions (the template says what the assistant wrote); `--turns last` keeps the last block.
/// Ids as the convention tokenises (`--span turn` with the post-processor's special tokens, whose positions
/// shift the ranges), truncated at `max_len`.
pub fn generation_span(
    tokenizer: &Tokenizer,
    mode: SpanMode,
    turns: Turns,
    text: &str,
    blocks: &[(usize, usize)],
    max_len: usize,
) -> Result<Prepared> {
    let (plain, offsets) = tokenizer.encode_offsets(text)?;
    let holding = |b: usize| offsets.iter().position(|&(s, e)| s <= b && b < e);
    let mut ranges = Vec::new();
    for &(s, e) in blocks {
        let Some(st) = holding(s) else { break };
        let en = holding(e.saturating_sub(1)).map_or(plain.len(), |t| t + 1);
        ranges.push((st, en.max(st)));
    }
    if turns == Turns::Last {
        ranges = ranges.split_off(ranges.len().saturating_sub(1));
    }
    let full = tokenizer.encode_with(text, mode == SpanMode::Turn, Some(max_len))?;
    // Special tokens the post-processor put before the text's tokens.
    let shift = if mode == SpanMode::Turn {
        let k = (0..=tokenizer.n_special_added().min(full.ids.len()))
            .find(|&k| full.ids[k..].iter().zip(&plain).all(|(a, b)| a == b))
            .ok_or_else(|| {
                LarkError::Unsupported(
                    "the tokenizer's special tokens do not sit before the text's tokens: the {% generation %} \
                     ranges cannot be placed (use --span content)"
                        .into(),
                )
            })?;
        k
    } else {
        0
    };
    let n = full.ids.len();
    let truncated = full.truncated();
    let turns: Vec<(usize, usize)> = ranges
        .into_iter()
        .map(|(a, b)| ((a + shift).min(n), (b + shift).min(n)))
        .filter(|&(a, b)| a >= 1 && a < b)
        .collect();
    let (Some(&(from, _)), Some(&(_, to))) = (turns.first(), turns.last()) else {
        return Ok(Prepared::Skipped(SkipReason::NoAssistantContent { full_len: n, truncated }));
    };
    Ok(Prepared::Ready(Trajectory {
        score_from: from,
        score_to: to,
        turns,
        truncated,
        prompt_len: from,
        full_len: n,
        untruncated_len: full.untruncated_len,
        prompt_is_prefix: true,
        other_spans: 0,
        ids: full.ids,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_matches_rsr_reference() {
        // header = [1, 2], end = [3]
        let h = [1, 2];
        let e = [3];
        assert_eq!(scan_assistant_spans(&[0, 1, 2, 5, 6, 3, 9], &h, &e), vec![(3, 5)]);
        // No end marker: to the end of the sequence.
        assert_eq!(scan_assistant_spans(&[0, 1, 2, 5, 6], &h, &e), vec![(3, 5)]);
        // Empty span (header then end, or header at the very end) is dropped.
        assert_eq!(scan_assistant_spans(&[1, 2, 3, 1, 2], &h, &e), Vec::<(usize, usize)>::new());
        // Two turns.
        assert_eq!(scan_assistant_spans(&[1, 2, 7, 3, 0, 1, 2, 8, 8, 3], &h, &e), vec![(2, 3), (7, 9)]);
        // A header inside a span is content (the scan resumes after the end marker).
        assert_eq!(scan_assistant_spans(&[1, 2, 1, 2, 4, 3], &h, &e), vec![(2, 5)]);
        assert!(scan_assistant_spans(&[1, 2, 3], &[], &e).is_empty());
    }

    #[test]
    fn locate_keeps_empty_turns_and_end_markers() {
        let (h, e) = ([1, 2], [3]);
        let got = locate_turns(&[0, 1, 2, 3, 9, 1, 2, 7, 8, 3, 4, 1, 2, 6], &h, &e);
        assert_eq!(
            got,
            vec![
                LocatedTurn { content: (3, 3), end: 4 },
                LocatedTurn { content: (7, 9), end: 10 },
                LocatedTurn { content: (13, 14), end: 14 },
            ]
        );
    }

    #[test]
    fn keep_scored_keeps_only_turn_positions() {
        let t = Trajectory {
            ids: (0..12).collect(),
            score_from: 2,
            score_to: 10,
            turns: vec![(2, 4), (7, 10)],
            truncated: false,
            prompt_len: 2,
            full_len: 12,
            untruncated_len: 12,
            prompt_is_prefix: true,
            other_spans: 0,
        };
        assert_eq!(t.n_scored(), 5);
        assert_eq!(t.n_covered(), 8);
        assert_eq!(t.keep_scored((2..10).collect::<Vec<u32>>()), vec![2, 3, 7, 8, 9]);
        assert_eq!(t.scored_ids(), vec![2, 3, 7, 8, 9]);
        assert_eq!("last".parse::<Turns>().unwrap(), Turns::Last);
        assert_eq!(Turns::default().to_string(), "all");
    }

    #[test]
    fn span_mode_parses() {
        assert_eq!("turn".parse::<SpanMode>().unwrap(), SpanMode::Turn);
        assert_eq!("content".parse::<SpanMode>().unwrap(), SpanMode::Content);
        assert!("all".parse::<SpanMode>().is_err());
        assert_eq!(SpanMode::default().to_string(), "turn");
    }

    #[test]
    fn request_cuts_at_span_end() {
        let t = Trajectory {
            ids: vec![5, 6, 7, 8, 9],
            score_from: 2,
            score_to: 4,
            turns: vec![(2, 4)],
            truncated: false,
            prompt_len: 2,
            full_len: 5,
            untruncated_len: 5,
            prompt_is_prefix: true,
            other_spans: 0,
        };
        let r = t.request();
        assert_eq!(r.ids, &[5, 6, 7, 8]);
        assert_eq!(r.score_from, 2);
        assert_eq!(r.n_scored(), 2);
        assert_eq!(t.scored_ids(), vec![7, 8]);
    }

    #[test]
    fn skip_reasons_print_their_code() {
        let r = SkipReason::PromptNotShorter { prompt_len: 8, full_len: 8, truncated: true };
        assert_eq!(r.code(), "prompt_not_shorter");
        assert!(r.to_string().starts_with("prompt_not_shorter: 8 prompt tokens"));
        assert!(r.truncated());
    }
}
