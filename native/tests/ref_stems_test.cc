#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "core/constants.h"
#include "core/rng.h"
#include "ref/stems.h"

namespace dm {
namespace ref {
namespace {

TEST(RefStems, SumsExactlyToInput) {
  const long S = 48000;
  std::vector<float> a(2 * S), v(2 * S), i(2 * S);
  FillNormal(a.data(), 2 * S, 4, 4);
  for (long n = 0; n < S; ++n) {  // bass + voice-band tone + noise, plus tiny/huge values
    const double t = static_cast<double>(n) / kSampleRate;
    a[n] = static_cast<float>(0.4 * std::sin(2 * M_PI * 55 * t) +
                              0.3 * std::sin(2 * M_PI * 800 * t) + 0.05 * a[n]);
    a[S + n] = static_cast<float>(0.4 * std::sin(2 * M_PI * 55 * t) +
                                  0.3 * std::sin(2 * M_PI * 800 * t) - 0.05 * a[S + n]);
  }
  SeparateStems(a.data(), S, v.data(), i.data());
  for (long n = 0; n < 2 * S; ++n) {
    const float sum = v[n] + i[n];
    ASSERT_EQ(std::memcmp(&sum, &a[n], 4), 0) << n;
  }
  // The voice band (800 Hz) goes to vocals, the 55 Hz bass mostly to instruments.
  auto corr = [&](const std::vector<float>& x, double hz) {
    double c = 0, s = 0;
    for (long n = 4800; n < S; ++n) {
      const double t = static_cast<double>(n) / kSampleRate;
      c += x[n] * std::cos(2 * M_PI * hz * t);
      s += x[n] * std::sin(2 * M_PI * hz * t);
    }
    return std::sqrt(c * c + s * s) / (S - 4800) * 2;
  };
  EXPECT_GT(corr(v, 800), 0.2);
  EXPECT_LT(corr(v, 55), 0.2);
  EXPECT_GT(corr(i, 55), 0.25);
  // Extreme values (denormals, huge spikes) still split exactly.
  std::vector<float> e = a;
  e[100] = 1e-30f;
  e[101] = -3e-39f;
  e[S + 7] = 1e20f;
  e[S + 9] = -3e38f;
  e[S + 11] = -0.0f;
  e[S + 12] = 0.0f;
  std::vector<float> ve(2 * S), ie(2 * S);
  SeparateStems(e.data(), S, ve.data(), ie.data());
  for (long n = 0; n < 2 * S; ++n) {
    const float sum = ve[n] + ie[n];
    ASSERT_EQ(std::memcmp(&sum, &e[n], 4), 0) << n;
  }
  // Deterministic.
  std::vector<float> v2(2 * S), i2(2 * S);
  SeparateStems(a.data(), S, v2.data(), i2.data());
  EXPECT_EQ(v, v2);
  EXPECT_EQ(i, i2);
}

}  // namespace
}  // namespace ref
}  // namespace dm
