#include "pipeline/decode.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"

namespace dm {
namespace pipe {
namespace decode_detail {

// Far above float32 rounding of a window (≤ 0.36 s ·25 → error < 1e-6), far below a frame.
constexpr double kFrameSnap = 1e-4;

long Mod(long a, long m) {
  long r = a % m;
  return r < 0 ? r + m : r;
}

}  // namespace decode_detail

WindowPlan PlanWindow(int frames_total, double vae_window, double t_start, bool cyclic) {
  const int T = frames_total;
  if (T < 1) Fail(Status::kInvalidArgument, "decode: latent has %d frames", T);
  WindowPlan p;
  auto full = [&]() {
    p.full = true;
    p.num_frames = T;
    p.pre = 0;
    p.kept = T;
    p.ks = 0;
    p.ke = T;
    p.start_sample = 0;
    return p;
  };
  if (!(vae_window > 0.0)) return full();
  const double w = std::min(std::max(vae_window, kMinVaeWindow), kMaxVaeWindow);
  const int F = kWindowFrames;
  // K = int(w·25) truncates, as DEMON does on a Python double, where k/25 s gives exactly k.
  // Windows reach us as float32 through the C API, and 0.12f·25 = 2.99999993: a product
  // within kFrameSnap of an integer counts as that integer, so k/25 s keeps k frames.
  const int K =
      std::max(1, std::min(static_cast<int>(w * kFrameRate + decode_detail::kFrameSnap), F));
  if (T <= K) return full();
  int ks = std::max(0, static_cast<int>(t_start * kFrameRate));  // int() truncates toward 0
  const int ke = std::min(T, ks + K);
  ks = std::max(0, ke - K);
  const int left = (F - K) / 2;
  p.ks = ks;
  p.ke = ke;
  p.kept = ke - ks;
  p.start_sample = static_cast<long>(ks) * kHop;
  if (cyclic) {
    p.num_frames = F;
    p.pre = left;
    for (int j = 0; j < F; ++j)
      p.frames[j] = static_cast<int>(decode_detail::Mod(ks - left + j, T));
  } else {
    // Non-cyclic with T < F: DEMON's fixed 25-frame engine would reject the shape; we decode
    // the T frames that exist (ds = 0).
    const int ds = std::max(0, std::min(ks - left, T - F));
    p.num_frames = std::min(F, T - ds);
    p.pre = ks - ds;
    for (int j = 0; j < p.num_frames; ++j) p.frames[j] = ds + j;
  }
  return p;
}

void DecodeWindow(const float* latent, int frames_total, const WindowPlan& plan,
                  const FrameDecoder& dec, float* window_audio) {
  for (int j = 0; j < plan.num_frames; ++j) {
    const long f = plan.full ? j : plan.frames[j];
    if (f < 0 || f >= frames_total)
      Fail(Status::kInvalidArgument, "decode: frame %ld out of range", f);
    dec.DecodeFrame(latent + f * kLatentDim, f,
                    window_audio + static_cast<long>(j) * kHop * kChannels);
  }
}

void GatherWindow(const float* latent, int frames_total, const WindowPlan& plan, float* z_out) {
  for (int j = 0; j < plan.num_frames; ++j) {
    const long f = plan.full ? j : plan.frames[j];
    if (f < 0 || f >= frames_total)
      Fail(Status::kInvalidArgument, "decode: frame %ld out of range", f);
    std::memcpy(z_out + static_cast<long>(j) * kLatentDim, latent + f * kLatentDim,
                kLatentDim * sizeof(float));
  }
}

void CrossfadeSlice(const float* playback, long playback_samples, long start_sample, float* slice,
                    long n) {
  if (n <= 0 || playback_samples <= 0) return;
  const long xf = std::min<long>(kMaxCrossfade, n / 4);
  if (xf <= 0) return;
  const float denom = xf > 1 ? static_cast<float>(xf - 1) : 1.f;
  for (long i = 0; i < xf; ++i) {
    const float w = xf > 1 ? static_cast<float>(i) / denom : 1.f;  // 0 → 1
    // Head: existing → new.
    {
      const long s = decode_detail::Mod(start_sample + i, playback_samples);
      for (int c = 0; c < kChannels; ++c) {
        float& v = slice[i * kChannels + c];
        v = (1.f - w) * playback[s * kChannels + c] + w * v;
      }
    }
    // Tail: new → existing.
    {
      const long k = n - xf + i;
      const long s = decode_detail::Mod(start_sample + k, playback_samples);
      for (int c = 0; c < kChannels; ++c) {
        float& v = slice[k * kChannels + c];
        v = (1.f - w) * v + w * playback[s * kChannels + c];
      }
    }
  }
}

void PatchWindow(float* playback, long playback_samples, long start_sample, const float* slice,
                 long n) {
  if (n <= 0 || playback_samples <= 0) return;
  long done = 0;
  long pos = decode_detail::Mod(start_sample, playback_samples);
  while (done < n) {
    const long run = std::min(n - done, playback_samples - pos);
    std::memcpy(playback + pos * kChannels, slice + done * kChannels,
                static_cast<size_t>(run) * kChannels * sizeof(float));
    done += run;
    pos = 0;
  }
}

uint16_t FloatToHalf(float f) {
  uint32_t x;
  std::memcpy(&x, &f, sizeof x);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t abs = x & 0x7FFFFFFFu;
  if (abs >= 0x7F800000u) {  // inf or NaN
    if (abs == 0x7F800000u) return sign | 0x7C00u;
    return static_cast<uint16_t>(sign | 0x7E00u | ((abs >> 13) & 0x3FFu));  // quiet, keep payload
  }
  if (abs >= 0x477FF000u) return sign | 0x7C00u;  // rounds to >= 65520 → inf
  if (abs >= 0x38800000u) {                       // normal half (>= 2^-14)
    uint32_t mant = abs & 0x7FFFFFu;
    uint32_t e = (abs >> 23) - 127 + 15;
    uint32_t h = (e << 10) | (mant >> 13);
    const uint32_t rem = mant & 0x1FFFu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;  // carry may bump the exponent
    return static_cast<uint16_t>(sign | h);
  }
  if (abs < 0x33000000u) return sign;  // < 2^-25 (half of the smallest subnormal) → ±0
  // Subnormal half: value = m·2^-24, m in [0, 1023]; round abs·2^24 to nearest even.
  const uint32_t e = abs >> 23;                         // biased float exponent (102..112)
  const uint32_t mant = (abs & 0x7FFFFFu) | 0x800000u;  // 24-bit significand
  const uint32_t shift = 126 - e;  // value = mant·2^(e−150) → ·2^24 = mant >> (126−e)
  uint32_t h = mant >> shift;
  const uint32_t rem = mant & ((1u << shift) - 1u);
  const uint32_t half = 1u << (shift - 1);
  if (rem > half || (rem == half && (h & 1u))) ++h;
  return static_cast<uint16_t>(sign | h);
}

float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1Fu;
  uint32_t mant = h & 0x3FFu;
  uint32_t x;
  if (e == 0) {
    if (mant == 0) {
      x = sign;
    } else {  // subnormal: normalise
      int shift = 0;
      while ((mant & 0x400u) == 0) {
        mant <<= 1;
        ++shift;
      }
      mant &= 0x3FFu;
      x = sign | (static_cast<uint32_t>(127 - 15 - shift + 1) << 23) | (mant << 13);
    }
  } else if (e == 0x1F) {
    x = sign | 0x7F800000u | (mant << 13);
  } else {
    x = sign | ((e - 15 + 127) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &x, sizeof f);
  return f;
}

void FloatsToHalf(const float* in, uint16_t* out, long n) {
  for (long i = 0; i < n; ++i) out[i] = FloatToHalf(in[i]);
}

void FloatsToHalfLE(const float* in, uint8_t* out, long n) {
  for (long i = 0; i < n; ++i) {
    const uint16_t h = FloatToHalf(in[i]);
    out[2 * i] = static_cast<uint8_t>(h & 0xFFu);
    out[2 * i + 1] = static_cast<uint8_t>(h >> 8);
  }
}

void HalfsToFloat(const uint16_t* in, float* out, long n) {
  for (long i = 0; i < n; ++i) out[i] = HalfToFloat(in[i]);
}

}  // namespace pipe
}  // namespace dm
