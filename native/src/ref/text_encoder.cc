#include "ref/text_encoder.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "core/constants.h"
#include "core/error.h"
#include "core/rng.h"

namespace dm {
namespace ref {

namespace text_detail {
constexpr float kEmbedScale = 0.02f;
constexpr uint64_t kLyricSalt = 0x6c797269632d2d2dull;    // "lyric---"
constexpr uint64_t kCaptionSalt = 0x63617074696f6e2dull;  // "caption-"
constexpr uint64_t kTimbreStream = 0x74696d6272652d2dull;

inline bool IsSpace(char c) {
  return c == ' ' || c == '\n' || c == '\t' || c == '\r' || c == '\f' || c == '\v';
}

inline uint64_t Fnv1a(const char* p, size_t n) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n; ++i) {
    h ^= static_cast<uint8_t>(p[i]);
    h *= 0x100000001b3ull;
  }
  return h;
}

// Calls f(id) for each word of s, in order.
template <class F>
void ForEachWord(const std::string& s, const F& f) {
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && IsSpace(s[i])) ++i;
    const size_t b = i;
    while (i < s.size() && !IsSpace(s[i])) ++i;
    if (i > b) f(Fnv1a(s.data() + b, i - b));
  }
}

inline void EmbedRow(uint64_t seed, uint64_t stream, float* out) {
  for (int d = 0; d < kEncoderDim; ++d)
    out[d] = CounterNormal(seed, stream, static_cast<uint64_t>(d)) * kEmbedScale;
}
}  // namespace text_detail

std::string TextEncoder::PromptText(const TextPrompt& p) {
  return "# Instruction\n" + p.instruction + "\n\n# Caption\n" + p.tags +
         "\n\n# Metas\n- bpm: " + p.bpm + "\n- timesignature: " + p.timesignature +
         "\n- keyscale: " + p.keyscale + "\n- duration: " + p.duration + "\n<|endoftext|>\n";
}

std::string TextEncoder::LyricsText(const TextPrompt& p) {
  return "# Languages\n" + p.language + "\n\n# Lyric\n" + p.lyrics + "<|endoftext|><|endoftext|>";
}

TextPrompt TextEncoder::Negative(const TextPrompt& p) {
  TextPrompt n = p;
  n.tags.clear();
  return n;
}

int TextEncoder::CountWords(const std::string& s) {
  int n = 0;
  text_detail::ForEachWord(s, [&n](uint64_t) { ++n; });
  return n;
}

int TextEncoder::ValidTokens(const TextPrompt& p) const {
  const long n = static_cast<long>(CountWords(LyricsText(p))) + 1 + CountWords(PromptText(p));
  return static_cast<int>(std::min<long>(n, kMaxCondLen));
}

int TextEncoder::Length(const TextPrompt& p) const { return std::max(ValidTokens(p), kMinCondLen); }

int TextEncoder::Tokenize(const TextPrompt& p, int32_t* ids) const {
  if (ids == nullptr) Fail(Status::kInvalidArgument, "text encoder: null token buffer");
  const int L = Length(p);
  int row = 0;
  auto put = [&](uint64_t h) {
    if (row < kMaxCondLen)
      ids[row] = 1 + static_cast<int32_t>(h % static_cast<uint64_t>(kVocab - 1));
    ++row;
  };
  text_detail::ForEachWord(LyricsText(p), [&](uint64_t id) { put(id ^ text_detail::kLyricSalt); });
  put(text_detail::kTimbreStream);
  text_detail::ForEachWord(PromptText(p),
                           [&](uint64_t id) { put(id ^ text_detail::kCaptionSalt); });
  for (int i = std::min(row, kMaxCondLen); i < L; ++i) ids[i] = 0;
  return L;
}

void TextEncoder::Embed(const int32_t* ids, int len, float* out) const {
  if (ids == nullptr || out == nullptr) Fail(Status::kInvalidArgument, "text encoder: null buffer");
  for (int i = 0; i < len; ++i) {
    float* row = out + static_cast<long>(i) * kEncoderDim;
    if (ids[i] < 0 || ids[i] >= kVocab) {
      Fail(Status::kInvalidArgument, "text encoder: token id %d outside [0, %d)", ids[i], kVocab);
    }
    if (ids[i] == 0) {
      std::memset(row, 0, sizeof(float) * kEncoderDim);
    } else {
      text_detail::EmbedRow(seed_, static_cast<uint64_t>(ids[i]), row);
    }
  }
}

void TextEncoder::Encode(const TextPrompt& p, float* out) const {
  if (out == nullptr) Fail(Status::kInvalidArgument, "text encoder: null output");
  int32_t ids[kMaxCondLen];
  const int L = Tokenize(p, ids);
  Embed(ids, L, out);
}

}  // namespace ref
}  // namespace dm
