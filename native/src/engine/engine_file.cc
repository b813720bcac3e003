#include "engine/engine_file.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>

namespace dm {
namespace engine_file_detail {

uint32_t ReadU32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 |
         static_cast<uint32_t>(p[2]) << 16 | static_cast<uint32_t>(p[3]) << 24;
}

uint64_t ReadU64(const uint8_t* p) {
  return static_cast<uint64_t>(ReadU32(p)) | static_cast<uint64_t>(ReadU32(p + 4)) << 32;
}

void PutU32(std::vector<uint8_t>& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

void PutU64(std::vector<uint8_t>& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

const char kMagic[8] = {'D', 'M', 'E', 'N', 'G', 'I', 'N', 'E'};

}  // namespace engine_file_detail

uint32_t Crc32(const uint8_t* data, size_t n, uint32_t crc) {
  static uint32_t table[256];
  static bool init = [] {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      table[i] = c;
    }
    return true;
  }();
  (void)init;
  crc = ~crc;
  for (size_t i = 0; i < n; ++i) crc = table[(crc ^ data[i]) & 0xFFu] ^ (crc >> 8);
  return ~crc;
}

const std::string& EngineFile::Get(const std::string& key) const {
  auto it = header.find(key);
  if (it == header.end()) Fail(Status::kCorrupt, "engine file header lacks %s", key.c_str());
  return it->second;
}

std::string EngineFile::GetOr(const std::string& key, const std::string& def) const {
  auto it = header.find(key);
  return it == header.end() ? def : it->second;
}

long long EngineFile::GetInt(const std::string& key) const {
  const std::string& v = Get(key);
  char* end = nullptr;
  errno = 0;
  long long x = std::strtoll(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0' || errno != 0) {
    Fail(Status::kCorrupt, "engine file header %s=%s is not a whole number", key.c_str(),
         v.c_str());
  }
  return x;
}

namespace engine_file_detail {

// Checks magic, format version and header size from the file's first min(n, 16) bytes (n is
// the whole file's size); returns the header size H.
uint64_t CheckPrefix(const uint8_t* data, uint64_t n) {
  if (n < 8 || std::memcmp(data, kMagic, 8) != 0) {
    Fail(Status::kCorrupt, "not a demon engine file (bad magic)");
  }
  if (n < 16) {
    Fail(Status::kCorrupt, "truncated engine file: %llu bytes, no header",
         static_cast<unsigned long long>(n));
  }
  uint32_t version = ReadU32(data + 8);
  if (version != kEngineFormatVersion) {
    Fail(Status::kMismatch, "engine file format version %u is not supported (this build reads %u)",
         version, kEngineFormatVersion);
  }
  uint64_t h = ReadU32(data + 12);
  if (h > kEngineMaxHeaderBytes) {
    Fail(Status::kCorrupt, "engine file header of %llu bytes exceeds the %zu-byte limit",
         static_cast<unsigned long long>(h), kEngineMaxHeaderBytes);
  }
  return h;
}

// Throws unless a file of n bytes with a header of h bytes has room for the payload length.
void CheckHeaderFits(uint64_t h, uint64_t n) {
  if (n < 16 + h + 8) {
    Fail(Status::kCorrupt, "truncated engine file: %llu bytes, header needs %llu",
         static_cast<unsigned long long>(n), static_cast<unsigned long long>(16 + h + 8));
  }
}

// Throws unless a file of n bytes is exactly header, a payload of p bytes and the checksum.
void CheckPayloadFits(uint64_t h, uint64_t p, uint64_t n) {
  uint64_t want = 16 + h + 8;
  if (p > n || want + p + 4 > n) {
    Fail(Status::kCorrupt, "truncated engine file: %llu bytes, header declares %llu",
         static_cast<unsigned long long>(n),
         static_cast<unsigned long long>(want + (p > n ? p : p + 4)));
  }
  want += p + 4;
  if (n != want) {
    Fail(Status::kCorrupt, "engine file has %llu trailing bytes after its checksum",
         static_cast<unsigned long long>(n - want));
  }
}

void ParseHeaderLines(const char* data, size_t h, EngineFile& f) {
  std::string hdr(data, h);
  size_t pos = 0;
  while (pos < hdr.size()) {
    size_t nl = hdr.find('\n', pos);
    if (nl == std::string::npos) Fail(Status::kCorrupt, "engine file header line not terminated");
    std::string line = hdr.substr(pos, nl - pos);
    pos = nl + 1;
    size_t eq = line.find('=');
    if (eq == std::string::npos || eq == 0) {
      Fail(Status::kCorrupt, "engine file header line without key=value");
    }
    f.header[line.substr(0, eq)] = line.substr(eq + 1);
  }
}

}  // namespace engine_file_detail

EngineFile ParseEngineFile(const uint8_t* data, size_t n) {
  using namespace engine_file_detail;
  const uint64_t h = CheckPrefix(data, n);
  CheckHeaderFits(h, n);
  const uint64_t p = ReadU64(data + 16 + h);
  CheckPayloadFits(h, p, n);
  uint32_t stored = ReadU32(data + n - 4);
  uint32_t computed = Crc32(data, n - 4);
  if (stored != computed) {
    Fail(Status::kCorrupt, "engine file checksum mismatch (stored %08x, computed %08x): corrupt",
         stored, computed);
  }

  EngineFile f;
  ParseHeaderLines(reinterpret_cast<const char*>(data + 16), static_cast<size_t>(h), f);
  const uint8_t* pl = data + 16 + h + 8;
  f.payload.assign(pl, pl + p);
  return f;
}

EngineFile ReadEngineFileHeader(const std::string& path) {
  using namespace engine_file_detail;
  FILE* fp = std::fopen(path.c_str(), "rb");
  if (fp == nullptr) {
    Fail(errno == ENOENT ? Status::kNotFound : Status::kCorrupt, "open %s: %s", path.c_str(),
         std::strerror(errno));
  }
  std::unique_ptr<FILE, int (*)(FILE*)> file(fp, &std::fclose);
  auto read_at = [&](uint64_t off, void* dst, size_t len) {
    if (std::fseek(fp, static_cast<long>(off), SEEK_SET) != 0 ||
        std::fread(dst, 1, len, fp) != len) {
      Fail(Status::kCorrupt, "read %s failed", path.c_str());
    }
  };
  if (std::fseek(fp, 0, SEEK_END) != 0) Fail(Status::kCorrupt, "seek %s failed", path.c_str());
  const long end = std::ftell(fp);
  if (end < 0) Fail(Status::kCorrupt, "size of %s unknown", path.c_str());
  const uint64_t n = static_cast<uint64_t>(end);
  try {
    uint8_t prefix[16] = {};
    read_at(0, prefix, static_cast<size_t>(n < 16 ? n : 16));
    const uint64_t h = CheckPrefix(prefix, n);
    CheckHeaderFits(h, n);
    std::vector<uint8_t> hdr(static_cast<size_t>(h) + 8);
    read_at(16, hdr.data(), hdr.size());
    CheckPayloadFits(h, ReadU64(hdr.data() + h), n);
    EngineFile f;
    ParseHeaderLines(reinterpret_cast<const char*>(hdr.data()), static_cast<size_t>(h), f);
    return f;
  } catch (const Error& e) {
    throw Error(e.status(), path + ": " + e.what());
  }
}

std::vector<uint8_t> SerializeEngineFile(const EngineFile& file) {
  std::string hdr;
  for (const auto& [k, v] : file.header) {
    if (k.empty() || k.find('=') != std::string::npos || k.find('\n') != std::string::npos ||
        v.find('\n') != std::string::npos) {
      Fail(Status::kInvalidArgument, "engine header entry %s cannot be serialised", k.c_str());
    }
    hdr += k + "=" + v + "\n";
  }
  if (hdr.size() > kEngineMaxHeaderBytes) Fail(Status::kInvalidArgument, "engine header too large");
  std::vector<uint8_t> out(engine_file_detail::kMagic, engine_file_detail::kMagic + 8);
  engine_file_detail::PutU32(out, kEngineFormatVersion);
  engine_file_detail::PutU32(out, static_cast<uint32_t>(hdr.size()));
  out.insert(out.end(), hdr.begin(), hdr.end());
  engine_file_detail::PutU64(out, file.payload.size());
  out.insert(out.end(), file.payload.begin(), file.payload.end());
  engine_file_detail::PutU32(out, Crc32(out.data(), out.size()));
  return out;
}

std::vector<uint8_t> ReadWholeFile(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) {
    Fail(errno == ENOENT ? Status::kNotFound : Status::kCorrupt, "open %s: %s", path.c_str(),
         std::strerror(errno));
  }
  std::vector<uint8_t> out;
  uint8_t buf[1 << 16];
  size_t got;
  while ((got = std::fread(buf, 1, sizeof buf, f)) > 0) out.insert(out.end(), buf, buf + got);
  bool bad = std::ferror(f) != 0;
  std::fclose(f);
  if (bad) Fail(Status::kCorrupt, "read %s failed", path.c_str());
  return out;
}

void WriteWholeFile(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::string tmp = path + ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (f == nullptr) Fail(Status::kNotFound, "create %s: %s", tmp.c_str(), std::strerror(errno));
  bool ok = std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size();
  ok = (std::fclose(f) == 0) && ok;
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    Fail(Status::kInternal, "write %s failed", path.c_str());
  }
}

}  // namespace dm
