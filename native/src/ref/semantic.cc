#include "ref/semantic.h"

#include <algorithm>

#include "core/constants.h"
#include "core/error.h"

namespace dm {
namespace ref {

void SemanticHints(const float* latents, int frames, float* hints) {
  if (frames < 1 || !latents || !hints)
    Fail(Status::kInvalidArgument, "semantic hints: bad arguments (T=%d)", frames);
  if (latents == hints) Fail(Status::kInvalidArgument, "semantic hints: output aliases input");
  for (int g0 = 0; g0 < frames; g0 += kPool) {
    const int g1 = std::min(frames, g0 + kPool);
    float mean[kLatentDim] = {};
    for (int k = g0; k < g1; ++k)
      for (int c = 0; c < kLatentDim; ++c)
        mean[c] += latents[static_cast<long>(k) * kLatentDim + c];
    const float inv = 1.0f / static_cast<float>(g1 - g0);
    for (int c = 0; c < kLatentDim; ++c) mean[c] *= inv;
    for (int k = g0; k < g1; ++k)
      for (int c = 0; c < kLatentDim; ++c) hints[static_cast<long>(k) * kLatentDim + c] = mean[c];
  }
}

void ContextLatents(const float* hints, int frames, float* context) {
  if (frames < 1 || !hints || !context)
    Fail(Status::kInvalidArgument, "context latents: bad arguments (T=%d)", frames);
  for (long k = 0; k < frames; ++k) {
    for (int c = 0; c < kLatentDim; ++c) context[k * kContextDim + c] = hints[k * kLatentDim + c];
    for (int c = kLatentDim; c < kContextDim; ++c) context[k * kContextDim + c] = 1.0f;
  }
}

}  // namespace ref
}  // namespace dm
