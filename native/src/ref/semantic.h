// Semantic-hint and context-latent stand-ins (spec/engine.md §7.5, §2.6 "Semantic extract").
#pragma once

namespace dm {
namespace ref {

// latents [T, 64] → hints [T, 64]: mean over each 5-frame pool window (the last window may
// be shorter and averages only the frames it has), repeated ×5, cropped to T. In place is
// not allowed (hints must not alias latents).
void SemanticHints(const float* latents, int frames, float* hints);

// hints [T, 64] → context latents [T, 128] = hints ‖ ones(64) (the all-ones chunk mask).
void ContextLatents(const float* hints, int frames, float* context);

}  // namespace ref
}  // namespace dm
