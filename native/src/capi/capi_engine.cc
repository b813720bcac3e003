// extern "C" entry points for engines, execution contexts and the reference builder.
#include <cstring>
#include <memory>

#include "capi/guard.h"
#include "capi/handles.h"
#include "core/constants.h"
#include "ref/text_encoder.h"

namespace dm {
namespace capi_detail {

const char* Str(const char* s, const char* what) {
  if (s == nullptr) Fail(Status::kInvalidArgument, "%s is NULL", what);
  return s;
}

// Copies a tensor description into the C struct. A description that does not fit (a bug in
// an engine, not bad input) is an internal error rather than a silently cut one, and leaves
// *out untouched.
void Describe(const TensorDesc& t, dm_tensor_desc* out) {
  bool fits = t.name.size() < DM_TENSOR_NAME_LEN && t.min.size() <= DM_MAX_RANK &&
              t.symbols.size() == t.min.size();
  for (size_t d = 0; fits && d < t.symbols.size(); ++d) {
    fits = t.symbols[d].size() < DM_DIM_SYMBOL_LEN;
  }
  if (!fits) {
    Fail(Status::kInternal,
         "tensor %.64s does not fit dm_tensor_desc (name, rank %zu, or its %zu dimension "
         "symbols)",
         t.name.c_str(), t.min.size(), t.symbols.size());
  }
  std::memset(out, 0, sizeof *out);
  std::memcpy(out->name, t.name.c_str(), t.name.size());
  out->is_input = t.input ? 1 : 0;
  out->dtype = static_cast<int>(t.dtype);
  out->rank = static_cast<int>(t.min.size());
  for (size_t d = 0; d < t.min.size(); ++d) {
    out->min[d] = t.min[d];
    out->opt[d] = t.opt[d];
    out->max[d] = t.max[d];
    std::memcpy(out->symbol[d], t.symbols[d].c_str(), t.symbols[d].size());
  }
}

}  // namespace capi_detail
}  // namespace dm

extern "C" {

int dm_engine_load(dm_device* device, const dm_engine_options* opts, dm_engine** out,
                   dm_error* err) noexcept {
  return dm::Guard(err, [&] {
    using dm::capi_detail::Str;
    dm::CheckHandle(device, "dm_engine_load");
    dm::CheckOut(out, "dm_engine_load");
    if (opts == nullptr) dm::Fail(dm::Status::kInvalidArgument, "dm_engine_load: options are NULL");
    dm::EngineOptions o;
    o.path = Str(opts->path, "engine path");
    o.component = Str(opts->component, "component");
    o.backend = Str(opts->backend, "backend");
    o.backend_version = Str(opts->backend_version, "backend version");
    o.owner = Str(opts->owner, "owner");
    o.footprint_bytes = opts->footprint_bytes;
    o.context_bytes = opts->context_bytes;
    auto e = std::make_unique<dm_engine>();
    e->engine = dm::LoadEngine(device->device, o);
    *out = e.release();
  });
}

void dm_engine_free(dm_engine** engine) noexcept { dm::FreeHandle(engine); }

int dm_engine_io_count(const dm_engine* engine) noexcept {
  return dm::GuardValue(
      0, [&] { return engine == nullptr ? 0 : static_cast<int>(engine->engine->io().size()); });
}

int dm_engine_io(const dm_engine* engine, int index, dm_tensor_desc* out, dm_error* err) noexcept {
  return dm::Guard(err, [&] {
    dm::CheckHandle(engine, "dm_engine_io");
    if (out == nullptr) dm::Fail(dm::Status::kInvalidArgument, "dm_engine_io: out is NULL");
    const auto& io = engine->engine->io();
    if (index < 0 || index >= static_cast<int>(io.size())) {
      dm::Fail(dm::Status::kInvalidArgument, "tensor index %d outside 0..%zu", index, io.size());
    }
    dm::capi_detail::Describe(io[static_cast<size_t>(index)], out);
  });
}

int dm_engine_inspect(const dm_engine_options* opts, dm_tensor_desc* out, int cap, int* count,
                      dm_error* err) noexcept {
  return dm::Guard(err, [&] {
    using dm::capi_detail::Str;
    if (opts == nullptr || count == nullptr || cap < 0 || (out == nullptr && cap > 0)) {
      dm::Fail(dm::Status::kInvalidArgument, "dm_engine_inspect: NULL argument or negative cap");
    }
    dm::EngineOptions o;
    o.path = Str(opts->path, "engine path");
    o.component = Str(opts->component, "component");
    o.backend = Str(opts->backend, "backend");
    o.backend_version = Str(opts->backend_version, "backend version");
    const std::vector<dm::TensorDesc> io = dm::InspectEngine(o);
    for (size_t i = 0; i < io.size() && i < static_cast<size_t>(cap); ++i) {
      dm::capi_detail::Describe(io[i], &out[i]);
    }
    *count = static_cast<int>(io.size());
  });
}

uint64_t dm_engine_context_bytes(const dm_engine* engine) noexcept {
  // ContextBytes asks the backend (a virtual call): guarded like any other.
  return dm::GuardValue<uint64_t>(
      0, [&]() -> uint64_t { return engine == nullptr ? 0 : engine->engine->ContextBytes(); });
}

int dm_context_create(dm_engine* engine, const char* owner, dm_context** out,
                      dm_error* err) noexcept {
  return dm::Guard(err, [&] {
    dm::CheckHandle(engine, "dm_context_create");
    dm::CheckOut(out, "dm_context_create");
    dm::CheckOwner(owner);
    auto c = std::make_unique<dm_context>();
    c->context = engine->engine->CreateContext(owner);
    *out = c.release();
  });
}

void dm_context_free(dm_context** context) noexcept { dm::FreeHandle(context); }

int dm_context_set_shape(dm_context* context, const char* name, const int64_t* dims, int rank,
                         dm_error* err) noexcept {
  return dm::Guard(err, [&] {
    dm::CheckHandle(context, "dm_context_set_shape");
    if (rank < 1 || rank > DM_MAX_RANK || dims == nullptr) {
      dm::Fail(dm::Status::kInvalidArgument, "dm_context_set_shape: rank %d (want 1..%d)", rank,
               DM_MAX_RANK);
    }
    context->context->SetShape(dm::capi_detail::Str(name, "tensor name"),
                               std::vector<int64_t>(dims, dims + rank));
  });
}

int dm_context_bind(dm_context* context, const char* name, dm_buffer* buffer,
                    dm_error* err) noexcept {
  return dm::Guard(err, [&] {
    dm::CheckHandle(context, "dm_context_bind");
    dm::CheckHandle(buffer, "dm_context_bind buffer");
    context->context->Bind(dm::capi_detail::Str(name, "tensor name"), buffer->memory.data(),
                           buffer->memory.size());
  });
}

int dm_context_execute(dm_context* context, dm_error* err) noexcept {
  return dm::Guard(err, [&] {
    dm::CheckHandle(context, "dm_context_execute");
    context->context->Execute();
  });
}

int dm_context_shape(const dm_context* context, const char* name, int64_t* dims, int* rank,
                     dm_error* err) noexcept {
  return dm::Guard(err, [&] {
    dm::CheckHandle(context, "dm_context_shape");
    if (dims == nullptr || rank == nullptr) {
      dm::Fail(dm::Status::kInvalidArgument, "dm_context_shape: output is NULL");
    }
    const auto& s = context->context->Shape(dm::capi_detail::Str(name, "tensor name"));
    *rank = static_cast<int>(s.size());
    for (size_t i = 0; i < s.size() && i < DM_MAX_RANK; ++i) dims[i] = s[i];
  });
}

int dm_prompt_tokenize(const dm_prompt* prompt, int negative, int32_t* ids, int cap, int* len,
                       dm_error* err) noexcept {
  return dm::Guard(err, [&] {
    if (prompt == nullptr || ids == nullptr || len == nullptr) {
      dm::Fail(dm::Status::kInvalidArgument, "dm_prompt_tokenize: NULL argument");
    }
    if (cap < dm::kMaxCondLen) {
      dm::Fail(dm::Status::kInvalidArgument, "dm_prompt_tokenize: cap %d < %d", cap,
               dm::kMaxCondLen);
    }
    dm::ref::TextPrompt p;
    if (prompt->tags != nullptr) p.tags = prompt->tags;
    if (prompt->bpm != nullptr) p.bpm = prompt->bpm;
    if (prompt->time_signature != nullptr) p.timesignature = prompt->time_signature;
    if (prompt->key != nullptr) p.keyscale = prompt->key;
    if (prompt->duration != nullptr) p.duration = prompt->duration;
    if (negative != 0) p = dm::ref::TextEncoder::Negative(p);
    *len = dm::ref::TextEncoder().Tokenize(p, ids);
  });
}

int dm_engine_file_check(const void* data, size_t size, dm_error* err) noexcept {
  return dm::Guard(err, [&] {
    if (data == nullptr && size > 0)
      dm::Fail(dm::Status::kInvalidArgument, "engine bytes are NULL");
    static const uint8_t kEmpty = 0;
    dm::ParseEngineFile(size == 0 ? &kEmpty : static_cast<const uint8_t*>(data), size);
  });
}

int dm_reference_engine_write(const dm_reference_options* opts, const char* path,
                              dm_error* err) noexcept {
  return dm::Guard(err, [&] {
    if (opts == nullptr) dm::Fail(dm::Status::kInvalidArgument, "reference options are NULL");
    dm::ReferenceOptions o;
    o.component = dm::capi_detail::Str(opts->component, "component");
    o.variant = opts->variant == nullptr ? "" : opts->variant;
    o.seed = opts->seed;
    o.duration_s = opts->duration_s;
    o.io_precision = opts->io_precision == nullptr ? "" : opts->io_precision;
    dm::WriteReferenceEngine(o, dm::capi_detail::Str(path, "path"));
  });
}

}  // extern "C"
