// Text-conditioning stand-in (spec/engine.md §7.5, template of §2.6).
//
// The prompt and lyrics strings are built exactly like DEMON's templates, split on ASCII
// whitespace into words, and each word is hashed (FNV-1a 64) to a token id. Token embedding
// = CounterNormal(seed, stream(id, kind), d) × 0.02 for d < 2048, with separate streams for
// lyric and caption tokens. Sequence layout (DEMON's packing): lyric tokens (Ll), one timbre
// token (a constant vector: no reference audio), caption tokens (Lt); L = Ll + 1 + Lt clamped
// to [32, 512]: shorter sequences are zero-padded at the end, longer ones are cut after
// token 512 (caption tokens go first, then the timbre token if the lyrics alone overflow).
#pragma once

#include <cstdint>
#include <string>

namespace dm {
namespace ref {

struct TextPrompt {
  static constexpr const char* kCoverInstruction =
      "Generate audio semantic tokens based on the given conditions:";
  std::string tags;  // caption; "" for the negative prompt
  std::string instruction = kCoverInstruction;
  std::string bpm = "N/A";  // metas are rendered verbatim
  std::string timesignature = "N/A";
  std::string keyscale = "N/A";
  std::string duration = "N/A";
  std::string language = "en";
  std::string lyrics = "[Instrumental]";
};

class TextEncoder {
 public:
  explicit TextEncoder(uint64_t seed = 0x7465787445ull) : seed_(seed) {}

  // "# Instruction\n{instr}\n\n# Caption\n{tags}\n\n# Metas\n- bpm: {bpm}\n- timesignature: "
  // "{ts}\n- keyscale: {key}\n- duration: {duration}\n<|endoftext|>\n"
  static std::string PromptText(const TextPrompt& p);
  // "# Languages\n{lang}\n\n# Lyric\n{lyrics}<|endoftext|><|endoftext|>"
  static std::string LyricsText(const TextPrompt& p);
  // The negative (unconditional) prompt: same template with empty tags.
  static TextPrompt Negative(const TextPrompt& p);
  // Number of whitespace-separated words.
  static int CountWords(const std::string& s);

  // Vocabulary size of the hashed tokenizer (Qwen3's, for realism). Id 0 is padding.
  static constexpr int32_t kVocab = 151643;

  // The engine seam: token ids [L] (L in [32, 512], zero-padded) for a prompt, and their
  // embeddings [L, 2048] (padding rows are zero). Encode == Embed(Tokenize(...)).
  int Tokenize(const TextPrompt& p, int32_t* ids /* [kMaxCondLen] */) const;
  void Embed(const int32_t* ids, int len, float* out) const;

  // L in [32, 512].
  int Length(const TextPrompt& p) const;
  // Writes [Length(p), 2048] floats (zero padding included). Deterministic.
  void Encode(const TextPrompt& p, float* out) const;
  // Number of valid (non-padding) tokens, <= Length(p).
  int ValidTokens(const TextPrompt& p) const;

 private:
  uint64_t seed_;
};

}  // namespace ref
}  // namespace dm
