#include "ref/oracle.h"

#include <algorithm>

#include "core/constants.h"
#include "core/error.h"

namespace dm {
namespace ref {

namespace oracle_detail {
inline float EncMean(const DecoderInputs& in, int b, int c) {
  double s = 0.0;
  const float* e = in.encoder_hidden_states + static_cast<long>(b) * in.cond_len * kEncoderDim + c;
  for (int l = 0; l < in.cond_len; ++l) s += e[static_cast<long>(l) * kEncoderDim];
  return static_cast<float>(s / in.cond_len);
}
inline void CheckInputs(const DecoderInputs& in) {
  if (in.batch < 1 || in.frames < 1 || in.cond_len < 1)
    Fail(Status::kInvalidArgument, "oracle forward: bad shape B=%d T=%d L=%d", in.batch, in.frames,
         in.cond_len);
  if (!in.hidden_states || !in.timestep || !in.encoder_hidden_states || !in.context_latents)
    Fail(Status::kInvalidArgument, "oracle forward: null tensor pointer");
}
}  // namespace oracle_detail

float OracleDecoder::Target(const DecoderInputs& in, int b, int tau, int c) {
  oracle_detail::CheckInputs(in);
  return in.context_latents[(static_cast<long>(b) * in.frames + tau) * kContextDim + c] +
         0.1f * oracle_detail::EncMean(in, b, c);
}

void OracleDecoder::Forward(const DecoderInputs& in, float* velocity, void* /*scratch*/,
                            Parallel& /*par*/) const {
  oracle_detail::CheckInputs(in);
  if (velocity == nullptr) Fail(Status::kInvalidArgument, "oracle forward: null velocity");
  for (int b = 0; b < in.batch; ++b) {
    float mean[kLatentDim];
    for (int c = 0; c < kLatentDim; ++c) mean[c] = 0.1f * oracle_detail::EncMean(in, b, c);
    const float t = std::max(in.timestep[b], 1e-4f);
    for (int tau = 0; tau < in.frames; ++tau) {
      const long row = static_cast<long>(b) * in.frames + tau;
      const float* x = in.hidden_states + row * kLatentDim;
      const float* ctx = in.context_latents + row * kContextDim;
      float* v = velocity + row * kLatentDim;
      for (int c = 0; c < kLatentDim; ++c) v[c] = (x[c] - (ctx[c] + mean[c])) / t;
    }
  }
}

}  // namespace ref
}  // namespace dm
