// The demon engine file: a small validated container around an engine's payload.
//
//   offset 0     "DMENGINE"                 magic, 8 bytes
//   offset 8     u32 format_version         1
//   offset 12    u32 header_bytes (H)       at most 64 KiB
//   offset 16    header                     "key=value\n" lines: component, backend,
//                                           backend_version, variant, and per-engine fields
//   offset 16+H  u64 payload_bytes (P)
//   offset 24+H  payload                    backend-specific (e.g. reference DiT weights)
//   offset 24+H+P u32 crc32                 IEEE CRC-32 of every byte before it
//
// All integers little-endian. The file must end exactly after the CRC. A TensorRT plan is
// not wrapped in this container: it is the plan file TensorRT writes, described by its
// JSON sidecar alone.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/error.h"

namespace dm {

inline constexpr uint32_t kEngineFormatVersion = 1;
inline constexpr size_t kEngineMaxHeaderBytes = 64 * 1024;

struct EngineFile {
  std::map<std::string, std::string> header;  // component, backend, backend_version, ...
  std::vector<uint8_t> payload;

  const std::string& Get(const std::string& key) const;  // throws kCorrupt if missing
  std::string GetOr(const std::string& key, const std::string& def) const;
  long long GetInt(const std::string& key) const;  // throws kCorrupt if missing/not a number
};

uint32_t Crc32(const uint8_t* data, size_t n, uint32_t crc = 0);

// Validates and parses a whole engine file held in memory. Throws kCorrupt (bad magic,
// truncation, checksum, malformed header) or kMismatch (unsupported format version).
EngineFile ParseEngineFile(const uint8_t* data, size_t n);

// Reads only the container framing and header of an engine file on disk: magic, format
// version, header size, and that the payload length the file declares matches its size (so
// truncation and trailing bytes are caught). The payload is neither read nor checksummed
// (ParseEngineFile does that when the engine loads); `payload` stays empty. For reading an
// engine's I/O table before anything is allocated. Throws like ParseEngineFile, with the path.
EngineFile ReadEngineFileHeader(const std::string& path);

// Serialises an engine file.
std::vector<uint8_t> SerializeEngineFile(const EngineFile& file);

// Reads a file from disk into memory. Throws kNotFound or kCorrupt with the path.
std::vector<uint8_t> ReadWholeFile(const std::string& path);
void WriteWholeFile(const std::string& path, const std::vector<uint8_t>& bytes);

}  // namespace dm
