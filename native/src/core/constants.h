// Model invariants shared by every layer of the shim (spec/engine.md §1).
#pragma once

#include <cstddef>
#include <cstdint>

namespace dm {

inline constexpr int kSampleRate = 48000;          // Hz, stereo float32 PCM
inline constexpr int kChannels = 2;                // audio channels
inline constexpr int kFrameRate = 25;              // latent frames per second
inline constexpr int kHop = 1920;                  // samples per latent frame (48000/25)
inline constexpr int kLatentDim = 64;              // latent channels D
inline constexpr int kMomentsDim = 128;            // VAE encoder output: mean ‖ logvar
inline constexpr int kContextDim = 128;            // context latents: hints ‖ chunk mask
inline constexpr int kEncoderDim = 2048;           // cross-attention width
inline constexpr int kPatch = 2;                   // DiT patch size (T must be even)
inline constexpr int kPool = 5;                    // semantic pool window (frames)
inline constexpr int kPoolSamples = kHop * kPool;  // 9600: sources are floored to this
inline constexpr int kWindowFrames = 25;           // fixed windowed-decode span (1 s)
inline constexpr int kMaxDepth = 8;                // ring-buffer depth limit (profile max batch)
inline constexpr int kMinCondLen = 32;             // encoder sequence length range
inline constexpr int kMaxCondLen = 512;

}  // namespace dm
