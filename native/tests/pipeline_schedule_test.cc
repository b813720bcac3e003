// Timestep schedule (spec/engine.md §4.2): the S=8, shift=3 table for d ∈ {1, 0.75, 0.5}.
#include <gtest/gtest.h>

#include <vector>

#include "core/error.h"
#include "pipeline/schedule.h"

namespace {

struct Row {
  float denoise;
  std::vector<double> exact;
  std::vector<float> bf16;
};

const std::vector<Row>& Table() {
  static const std::vector<Row> rows = {
      {1.0f,
       {1, 21.0 / 22, .9, 5.0 / 6, .75, 9.0 / 14, .5, .3, 0},
       {1, .953125f, .8984375f, .83203125f, .75f, .64453125f, .5f, .30078125f, 0}},
      {0.75f,
       {12.0 / 13, .875, 9.0 / 11, .75, 2.0 / 3, .5625, 3.0 / 7, .25, 0},
       {.92578125f, .87109375f, .8203125f, .75f, .66796875f, .5625f, .4296875f, .25f, 0}},
      {0.5f,
       {.75, .7, 9.0 / 14, 15.0 / 26, .5, 9.0 / 22, .3, 1.0 / 6, 0},
       {.75f, .69921875f, .64453125f, .578125f, .5f, .408203125f, .30078125f, .1669921875f, 0}},
  };
  return rows;
}

TEST(PipelineSchedule, Fp32MatchesExactTable) {
  for (const Row& row : Table()) {
    std::vector<float> t = dm::pipe::BuildSchedule(8, 3.0f, row.denoise);
    ASSERT_EQ(t.size(), 9u) << "d=" << row.denoise;
    for (size_t i = 0; i < t.size(); ++i)
      EXPECT_NEAR(t[i], row.exact[i], 1e-6) << "d=" << row.denoise << " i=" << i;
  }
}

TEST(PipelineSchedule, Bf16EmulationMatchesBf16TableExactly) {
  for (const Row& row : Table()) {
    std::vector<float> t = dm::pipe::BuildScheduleBf16(8, 3.0f, row.denoise);
    ASSERT_EQ(t.size(), 9u);
    for (size_t i = 0; i < t.size(); ++i)
      EXPECT_EQ(t[i], row.bf16[i]) << "d=" << row.denoise << " i=" << i;
  }
}

TEST(PipelineSchedule, EdgeCases) {
  // d <= 1e-6: one step [0, 0].
  EXPECT_EQ(dm::pipe::BuildSchedule(8, 3.0f, 0.f), (std::vector<float>{0.f, 0.f}));
  // shift 1: plain linspace; denoise >= 1 clamps t0 to 1.
  std::vector<float> lin = dm::pipe::BuildSchedule(4, 1.0f, 2.0f);
  EXPECT_EQ(lin, (std::vector<float>{1.f, .75f, .5f, .25f, 0.f}));
  // t0 = S / floor(S/d): S=8, d=0.3 → 8/26.
  EXPECT_NEAR(dm::pipe::BuildSchedule(8, 1.0f, 0.3f)[0], 8.0 / 26, 1e-7);
  EXPECT_THROW(dm::pipe::BuildSchedule(0, 3.0f, 1.f), dm::Error);
  EXPECT_THROW(dm::pipe::BuildSchedule(8, 0.0f, 1.f), dm::Error);
}

TEST(PipelineSchedule, RoundBf16) {
  EXPECT_EQ(dm::pipe::RoundBf16(1.0f), 1.0f);
  EXPECT_EQ(dm::pipe::RoundBf16(0.8f), 0.80078125f);
  EXPECT_EQ(dm::pipe::RoundBf16(2.6015625f), 2.59375f);  // tie → even
}

}  // namespace
