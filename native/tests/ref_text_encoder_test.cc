#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/constants.h"
#include "ref/text_encoder.h"

namespace dm {
namespace ref {
namespace {

TEST(RefTextEncoder, TemplateText) {
  TextPrompt p;
  p.tags = "lofi hip hop, mellow piano";
  p.bpm = "90";
  EXPECT_EQ(TextEncoder::PromptText(p),
            "# Instruction\nGenerate audio semantic tokens based on the given conditions:\n\n"
            "# Caption\nlofi hip hop, mellow piano\n\n# Metas\n- bpm: 90\n- timesignature: N/A\n"
            "- keyscale: N/A\n- duration: N/A\n<|endoftext|>\n");
  EXPECT_EQ(TextEncoder::LyricsText(p),
            "# Languages\nen\n\n# Lyric\n[Instrumental]<|endoftext|><|endoftext|>");
  EXPECT_EQ(TextEncoder::Negative(p).tags, "");
  EXPECT_EQ(TextEncoder::CountWords("  a b\n\nc  "), 3);
}

TEST(RefTextEncoder, DeterministicLengthAndPadding) {
  TextEncoder enc;
  TextPrompt p;
  p.tags = "dark techno";
  const int L = enc.Length(p);
  const int valid = enc.ValidTokens(p);
  EXPECT_GE(L, kMinCondLen);
  EXPECT_LE(L, kMaxCondLen);
  EXPECT_EQ(L, std::max(valid, kMinCondLen));
  std::vector<float> a(static_cast<size_t>(L) * kEncoderDim, 9.0f), b(a.size(), -9.0f);
  enc.Encode(p, a.data());
  enc.Encode(p, b.data());
  EXPECT_EQ(a, b);
  for (int l = 0; l < L; ++l) {
    double ss = 0;
    for (int d = 0; d < kEncoderDim; ++d)
      ss +=
          a[static_cast<size_t>(l) * kEncoderDim + d] * a[static_cast<size_t>(l) * kEncoderDim + d];
    const double rms = std::sqrt(ss / kEncoderDim);
    if (l < valid)
      EXPECT_NEAR(rms, 0.02, 0.004) << l;
    else
      EXPECT_EQ(rms, 0.0) << l;
  }
  // Different prompt → different embedding; negative is shorter than positive.
  TextPrompt q = p;
  q.tags = "bright house";
  std::vector<float> c(static_cast<size_t>(enc.Length(q)) * kEncoderDim);
  enc.Encode(q, c.data());
  EXPECT_NE(
      std::vector<float>(c.begin(), c.begin() + static_cast<long>(std::min(a.size(), c.size()))),
      std::vector<float>(a.begin(), a.begin() + static_cast<long>(std::min(a.size(), c.size()))));
  EXPECT_LT(enc.ValidTokens(TextEncoder::Negative(p)), enc.ValidTokens(p));
  // Seed changes values.
  TextEncoder other(42);
  std::vector<float> d(a.size());
  other.Encode(p, d.data());
  EXPECT_NE(a, d);
}

TEST(RefTextEncoder, ClampsToMax) {
  TextEncoder enc;
  TextPrompt p;
  for (int i = 0; i < 800; ++i) p.tags += "word" + std::to_string(i) + " ";
  EXPECT_EQ(enc.Length(p), kMaxCondLen);
  EXPECT_EQ(enc.ValidTokens(p), kMaxCondLen);
  std::vector<float> out(static_cast<size_t>(kMaxCondLen) * kEncoderDim);
  enc.Encode(p, out.data());
  EXPECT_NE(out.back(), 0.0f);
}

}  // namespace
}  // namespace ref
}  // namespace dm
