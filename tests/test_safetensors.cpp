// safetensors: the layout PyTorch's loader expects, round trips, and a suite of corrupt headers,
// each rejected with a message that names the file and the field.
#include <gtest/gtest.h>

#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>

#include <nlohmann/json.hpp>

#include "nuq/error.h"
#include "nuq/io/json_parse.h"
#include "nuq/io/safetensors.h"
#include "nuq/io/safetensors_stream.h"
#include "sanitizer_build.h"
#include "temp_dir.h"

namespace nuq::io {
namespace {

using Bytes = std::vector<std::uint8_t>;

// A file from a header text and a data section, exactly as given.
Bytes file_of(const std::string& header, const Bytes& data) {
  Bytes bytes;
  bytes.reserve(8 + header.size() + data.size());
  const std::uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) bytes.push_back(static_cast<std::uint8_t>(n >> (8 * i)));
  bytes.insert(bytes.end(), header.begin(), header.end());
  bytes.insert(bytes.end(), data.begin(), data.end());
  return bytes;
}

TEST(Safetensors, WritesTheReferenceLayout) {
  TensorFile file;
  file.tensors["b"] = f32_tensor({2}, {1.0f, -2.0f});
  file.tensors["a"] = f32_tensor({1, 1}, {0.5f});
  const Bytes bytes = serialize_safetensors(file);
  std::uint64_t header_size = 0;
  std::memcpy(&header_size, bytes.data(), 8);
  EXPECT_EQ(header_size % 8, 0u);  // data aligned to 8 bytes
  const std::string header(reinterpret_cast<const char*>(bytes.data()) + 8, header_size);
  EXPECT_EQ(header.substr(0, header.find_last_not_of(' ') + 1),
            R"({"__metadata__":{"format":"pt"},"a":{"data_offsets":[0,4],"dtype":"F32","shape":[1,1]},)"
            R"("b":{"data_offsets":[4,12],"dtype":"F32","shape":[2]}})");
  const float* data = reinterpret_cast<const float*>(bytes.data() + 8 + header_size);
  EXPECT_EQ(data[0], 0.5f);
  EXPECT_EQ(data[2], -2.0f);
  EXPECT_EQ(bytes.size(), 8 + header_size + 12);
}

// plan_header writes the text itself (an nlohmann object of 10^5 tensors took 200 MB): the bytes
// are those nlohmann's dump of the same object gives, for names before and after "__metadata__" in
// byte order, names that need escapes, scalars and metadata that needs them too; a name given
// twice is refused.
TEST(Safetensors, HeaderTextIsNlohmannsDumpOfTheSameObject) {
  const std::vector<std::string> names = {"A.weight", "_", "__metadata_", "__metadata__x", "a\"quoted\\name",
                                          "tab\tnewline\n", "\xc3\xa9t\xc3\xa9", "z", "0", "\x7f"};
  std::vector<std::pair<std::string, TensorEntry>> tensors;
  for (std::size_t k = 0; k < names.size(); ++k)
    tensors.push_back({names[k], TensorEntry{k % 3 ? DType::F32 : DType::BF16,
                                             k == 4 ? std::vector<std::int64_t>{} : std::vector<std::int64_t>{std::int64_t(k), 3}}});
  tensors.push_back({"codes", TensorEntry{DType::U8, {123456789012}}});
  // The metadata is written entry by entry too: "format" (added as "pt" unless given) among keys
  // before and after it in byte order, keys and values that need escapes.
  const std::vector<std::map<std::string, std::string>> metadatas = {
      {{"note", "say \"hi\"\n"}, {"nuq", "{\"a\":[1,2]}"}},
      {{"Z", ""}, {"a", "1"}, {"forma", "t"}, {"format_x", "\x01"}, {"\xc3\xa9\t", "\xe2\x82\xac\\"}},
      {{"format", "mlx"}, {"a", "b"}},
      {{"formaz", "after"}},
      {}};
  for (const auto& metadata : metadatas) {
    std::vector<std::pair<std::string, TensorEntry>> planned = tensors;
    const std::string text = plan_header(metadata, planned, "test");
    nlohmann::json expected = nlohmann::json::object();
    expected["__metadata__"] = metadata;
    if (!metadata.count("format")) expected["__metadata__"]["format"] = "pt";
    for (const auto& [name, entry] : planned)
      expected[name] = {
          {"dtype", to_string(entry.dtype)}, {"shape", entry.shape}, {"data_offsets", {entry.begin, entry.end}}};
    const std::string dumped = expected.dump();
    EXPECT_EQ(text.substr(0, text.find_last_not_of(' ') + 1), dumped);
    EXPECT_EQ(text.size() % 8, 0u);
    EXPECT_EQ(text.size() - dumped.size(), (8 - dumped.size() % 8) % 8);
  }
  const std::map<std::string, std::string> metadata = metadatas.front();
  tensors.push_back({"z", TensorEntry{DType::F32, {1}}});
  EXPECT_THROW(plan_header(metadata, tensors, "test"), Error);
  std::vector<std::pair<std::string, TensorEntry>> none;
  EXPECT_EQ(plan_header({}, none, "test"), R"({"__metadata__":{"format":"pt"}})");  // 32 bytes: no padding
}

// parse_json_bounded with a collapsed member (quantized_run reads each tensor's entry so): the tree
// is nlohmann's parse of the text with that object emptied, and the visitor sees each of its
// members as nlohmann parses it; only an object that is the top-level object's member collapses.
TEST(Safetensors, ACollapsedMemberIsVisitedAndLeftEmpty) {
  const std::vector<std::string> texts = {
      R"({"a":1,"tensors":{"x":{"group_size":64,"shape":[1,[2,{"k":null}]]},"y":[1,{"z":true}],"z":-2.5e300,)"
      R"("\u00e9":"s","e":{},"f":[]},"version":3,"w":{"tensors":{"q":1}}})",
      R"({"tensors":{},"b":[{"tensors":{"x":1}}]})",
      R"({"tensors":[{"x":1}],"c":{"d":{"e":[1,2,{"f":"g"}]}}})",
      R"({"tensors":7})",
      R"({"b":null})",
      R"([{"tensors":{"x":1}}])",
      R"("tensors")",
      R"({"tensors":{"a":18446744073709551615,"b":-9223372036854775808,"c":0.1}})"};
  for (const std::string& text : texts) {
    SCOPED_TRACE(text);
    std::vector<std::pair<std::string, nlohmann::json>> visited;
    const auto visit = [&](const std::string& name, const nlohmann::json& v) { visited.emplace_back(name, v); };
    const nlohmann::json tree = parse_json_bounded(text, 16, "tensors", visit);
    nlohmann::json expected = nlohmann::json::parse(text);
    std::vector<std::pair<std::string, nlohmann::json>> members;
    if (expected.is_object() && expected.contains("tensors") && expected["tensors"].is_object()) {
      for (const auto& [name, v] : expected["tensors"].items()) members.emplace_back(name, v);
      expected["tensors"] = nlohmann::json::object();
    }
    EXPECT_EQ(tree, expected);
    EXPECT_EQ(tree.dump(), expected.dump());  // numbers of the same types
    std::sort(visited.begin(), visited.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    EXPECT_EQ(visited, members);  // (visited in the text's order; a tree's members are in name order)
  }
  const auto ignore = [](const std::string&, const nlohmann::json&) {};
  EXPECT_THROW(parse_json_bounded(R"({"tensors":{"x":1,"x":2}})", 16, "tensors", ignore), Error);
  EXPECT_THROW(parse_json_bounded(R"({"tensors":{"x":[[[[1]]]]}})", 4, "tensors", ignore), Error);
  EXPECT_THROW(parse_json_bounded(R"({"tensors":{"x":1,}})", 16, "tensors", ignore), Error);
}

TEST(Safetensors, RoundTripsThroughAFile) {
  test::TempDir dir;
  TensorFile file;
  file.metadata["nuq"] = "{\"method\":\"sptq\"}";
  file.tensors["w"] = f32_tensor({2, 3}, {1, 2, 3, 4, 5, 6});
  Tensor codes;
  codes.dtype = DType::U8;
  codes.shape = {3};
  codes.data = {0x1B, 0xE4, 0x00};
  file.tensors["w.codes"] = codes;
  file.tensors["empty"] = f32_tensor({0, 4}, {});
  write_safetensors(dir.file("m.safetensors"), file);
  const TensorFile back = read_safetensors(dir.file("m.safetensors"));
  EXPECT_EQ(back.metadata.at("format"), "pt");
  EXPECT_EQ(back.metadata.at("nuq"), file.metadata.at("nuq"));
  EXPECT_EQ(to_floats(back.tensors.at("w"), "w"), (std::vector<float>{1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(back.tensors.at("w.codes").data, codes.data);
  EXPECT_EQ(back.tensors.at("empty").element_count(), 0u);
  EXPECT_THROW(to_floats(back.tensors.at("w.codes"), "w.codes"), Error);
  // The file, written a tensor at a time, holds exactly the bytes serialize_safetensors gives.
  std::ifstream in(dir.file("m.safetensors"), std::ios::binary);
  const std::vector<std::uint8_t> written((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(written, serialize_safetensors(file));
}

TEST(Safetensors, RejectsCorruptFiles) {
  const Bytes eight(8, 0);
  const std::string ok = R"("t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  struct Case {
    const char* name;
    Bytes bytes;
    const char* message;
  };
  Bytes huge_header(8, 0);
  huge_header[7] = 0x01;  // 2^56 bytes
  Bytes past_end = file_of("{}", {});
  past_end[0] = 200;
  const std::vector<Case> cases = {
      {"short", Bytes{1, 2, 3}, "too short"},
      {"header-cap", huge_header, "exceeds the cap"},
      {"header-past-end", past_end, "runs past the end"},
      {"not-brace", file_of(" {}", {}), "must start with '{'"},
      {"bad-json", file_of("{\"t\":", {}), "not valid JSON"},
      {"bad-utf8", file_of("{\"\xff\xfe\":1}", {}),
       "the header is not valid JSON (parse error at line 1, column 3: syntax error while parsing object key - invalid "
       "string: ill-formed UTF-8 byte; expected string literal)"},
      {"array", file_of("{", {}), "not valid JSON"},
      // nlohmann's lexer ends its input at a NUL byte: what follows one must not be ignored.
      {"nul-padding", file_of("{}" + std::string(6, '\0'), {}), "the header is not valid JSON (a NUL byte at byte 2"},
      {"nul-then-text", file_of("{" + ok + "}" + std::string(1, '\0') + " not JSON {{{", eight), "a NUL byte at byte"},
      {"duplicate", file_of("{" + ok + "," + ok + "}", eight), "twice"},
      {"empty-name-twice", file_of(R"({"":{"dtype":"F32","shape":[]},"":{"dtype":1,"data_offsets":[0,4]}})", {1, 2, 3, 4}),
       "the header names '' twice in one object"},
      {"empty-meta-key-twice", file_of(R"({"__metadata__":{"":"v","":1}})", {}), "names '' twice"},
      {"meta-not-string", file_of(R"({"__metadata__":{"a":1}})", {}), "is not a string"},
      {"meta-not-object", file_of(R"({"__metadata__":[]})", {}), "not an object"},
      {"tensor-not-object", file_of(R"({"t":3})", {}), "is not an object"},
      {"missing-field", file_of(R"({"t":{"dtype":"F32","shape":[2]}})", eight), "needs dtype"},
      {"unknown-dtype", file_of(R"({"t":{"dtype":"F31","shape":[2],"data_offsets":[0,8]}})", eight), "unknown dtype"},
      {"negative-dim", file_of(R"({"t":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", eight), "non-negative"},
      {"float-dim", file_of(R"({"t":{"dtype":"F32","shape":[2.5],"data_offsets":[0,8]}})", eight), "non-negative"},
      {"shape-overflow", file_of(R"({"t":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", eight), "overflows"},
      {"size-mismatch", file_of(R"({"t":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", eight), "needs 12"},
      {"offsets-reversed", file_of(R"({"t":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", eight), "fall outside"},
      {"offsets-outside", file_of(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", eight), "fall outside"},
      {"offsets-not-ints", file_of(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", eight), "two non-negative"},
      {"overlap", file_of(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", eight),
       "tensor 'b' overlaps tensor 'a' (it begins at data byte 4, before that one ends at 8): safetensors gives each"},
      {"hole", file_of(R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", eight), "hole"},
      {"trailing", file_of(R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", eight), "trailing bytes"},
      {"f4-half-byte", file_of(R"({"t":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}})", {1, 2}), "not a whole number of bytes"},
      {"f6-size", file_of(R"({"t":{"dtype":"F6_E3M2","shape":[4],"data_offsets":[0,4]}})", {1, 2, 3, 4}), "needs 3"},
      {"dim-past-int64", file_of(R"({"t":{"dtype":"U8","shape":[9223372036854775808,0],"data_offsets":[0,0]}})", {}), "out of range"},
      {"rank", file_of(R"({"t":{"dtype":"U8","shape":[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1],)"
                       R"("data_offsets":[0,1]}})", {1}), "rank <= 32"},
      // No element, but dimensions no array library can allocate even empty (numpy, PyTorch).
      {"zero-hides-overflow",
       file_of(R"({"t":{"dtype":"F32","shape":[0,1099511627776,1099511627776],"data_offsets":[0,0]}})", {}), "too large"},
      // Refused before the parse that would hold every level (tens of bytes a byte of header).
      {"deep", file_of("{\"a\":" + std::string(64, '[') + std::string(64, ']') + "}", {}), "nested deeper"},
      {"nested-dim", file_of(R"({"t":{"dtype":"F32","shape":[[2]],"data_offsets":[0,8]}})", eight), "non-negative"},
      {"dtype-object", file_of(R"({"t":{"dtype":{"F32":1},"shape":[2],"data_offsets":[0,8]}})", eight),
       "dtype is not a string"},
      {"offsets-three", file_of(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8,8]}})", eight), "two non-negative"},
      // Several faults: the first in name order is named, __metadata__ in its place among the names.
      {"first-fault", file_of(R"({"b":{"dtype":"F31"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,9]}})", eight),
       "tensor 'a': data_offsets [0, 9] fall outside"},
      {"metadata-fault", file_of(R"({"b":{"dtype":"F31"},"__metadata__":{"k":"v","j":[]}})", {}),
       "__metadata__ value 'j' is not a string"},
      {"fault-before-metadata", file_of(R"({"__metadata__":{"j":[]},"B":3})", {}), "tensor 'B' is not an object"},
  };
  // At the limit: non-zero dimensions of 2^60 elements beside a zero one still read.
  EXPECT_NO_THROW(parse_safetensors(
      file_of(R"({"t":{"dtype":"F64","shape":[1073741824,0,1073741824],"data_offsets":[0,0]}})", {}), "limit"));
  for (const Case& c : cases) {
    try {
      parse_safetensors(c.bytes, c.name);
      ADD_FAILURE() << c.name << " was accepted";
    } catch (const Error& e) {
      const std::string what = e.what();
      EXPECT_EQ(what.rfind(c.name, 0), 0u) << what;  // the message starts with the file's name
      EXPECT_NE(what.find(c.message), std::string::npos) << c.name << ": " << what;
    }
  }
}

// A header is read without a JSON tree, which took 30 to 40 bytes a byte of text for some (100 MiB
// of empty arrays took 3.9 GB to refuse): this one of 12 MB is refused within 64 MB more than the
// process held. Values the format does not define are skipped whole, and a tensor's other fields
// are ignored.
TEST(Safetensors, AHeaderIsReadWithoutATreeOfIt) {
  std::string header = R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":[{"y":[1]},2]},"u":[)";
  for (int i = 0; i < 4'000'000; ++i) header += "[],";
  header += "[]]}";
  EXPECT_EQ(parse_layout(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":[{"y":[1]},2]}})", 8, "f")
                .tensors.at("t")
                .end,
            8u);
  if (test::kAddressSanitizer || test::kThreadSanitizer)
    GTEST_SKIP() << "a sanitizer's shadow memory takes more address space than the limit";
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    std::ifstream statm("/proc/self/statm");
    std::size_t pages = 0;
    statm >> pages;
    const rlim_t limit = pages * rlim_t(sysconf(_SC_PAGESIZE)) + (rlim_t{64} << 20);
    const struct rlimit address_space {limit, limit};
    ::setrlimit(RLIMIT_AS, &address_space);
    try {
      parse_layout(header, 8, "f");
    } catch (const Error& e) {
      _exit(std::string(e.what()) == "f: tensor 'u' is not an object" ? 0 : 2);
    } catch (const std::bad_alloc&) {
      _exit(3);
    }
    _exit(4);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "2: another message, 3: out of memory, 4: accepted";
}

// Every dtype the format defines, with its size in bits as the reference parser has it: peers'
// FP8, MX (packed F4/F6) and complex checkpoints are read, and written back as they were, each
// tensor placed at a multiple of its element size.
TEST(Safetensors, EveryDtypeOfTheFormatIsReadAndWrittenBack) {
  const std::vector<std::pair<const char*, std::size_t>> bits = {
      {"BOOL", 8},     {"U8", 8},       {"I8", 8},           {"F8_E5M2", 8},      {"F8_E4M3", 8},  {"F8_E8M0", 8},
      {"F8_E4M3FNUZ", 8}, {"F8_E5M2FNUZ", 8}, {"I16", 16}, {"U16", 16}, {"F16", 16}, {"BF16", 16},
      {"I32", 32},     {"U32", 32},     {"F32", 32},         {"C64", 64},         {"F64", 64},     {"I64", 64},
      {"U64", 64},     {"F4", 4},       {"F6_E2M3", 6},      {"F6_E3M2", 6}};
  // Placed narrowest first and in reverse name order, as a peer might: nothing depends on it.
  std::string header = "{";
  Bytes data;
  std::uint64_t offset = 0;
  for (auto it = bits.rbegin(); it != bits.rend(); ++it) {
    const std::uint64_t bytes = 12 * it->second / 8;  // 12 elements: whole bytes at 4 and 6 bits
    header += std::string(header.size() > 1 ? "," : "") + "\"t_" + it->first + "\":{\"dtype\":\"" + it->first +
              "\",\"shape\":[3,4],\"data_offsets\":[" + std::to_string(offset) + "," +
              std::to_string(offset + bytes) + "]}";
    for (std::uint64_t b = 0; b < bytes; ++b) data.push_back(std::uint8_t(offset + b));
    offset += bytes;
  }
  header += "}";
  const TensorFile file = parse_safetensors(file_of(header, data), "peer.safetensors");
  ASSERT_EQ(file.tensors.size(), bits.size());
  for (const auto& [name, size] : bits) {
    const Tensor& t = file.tensors.at(std::string("t_") + name);
    EXPECT_EQ(to_string(t.dtype), name);
    EXPECT_EQ(dtype_bits(t.dtype), size) << name;
    EXPECT_EQ(t.data.size(), 12 * size / 8) << name;
  }
  const Bytes written = serialize_safetensors(file);
  std::uint64_t header_size = 0;
  std::memcpy(&header_size, written.data(), 8);
  const Layout layout = parse_layout(std::string(reinterpret_cast<const char*>(written.data()) + 8, header_size),
                                     written.size() - 8 - header_size, "written");
  for (const auto& [name, entry] : layout.tensors) {
    const std::size_t element = std::max<std::size_t>(dtype_bits(entry.dtype) / 8, 1);
    EXPECT_EQ((8 + header_size + entry.begin) % element, 0u) << name << " is not aligned to its elements";
  }
  const TensorFile back = parse_safetensors(written, "written");
  for (const auto& [name, t] : file.tensors) {
    EXPECT_EQ(back.tensors.at(name).data, t.data) << name;
    EXPECT_EQ(back.tensors.at(name).dtype, t.dtype) << name;
  }
  EXPECT_THROW(dtype_size(DType::F4), std::logic_error);  // sub-byte: only byte_size answers
  EXPECT_EQ(byte_size(DType::F6_E2M3, 8, "t"), 6u);
  EXPECT_THROW(byte_size(DType::F4, 5, "t"), Error);
}

// Other tools' weight files are named for what they are (by their real first bytes), by the
// whole-file parser and the streaming reader alike; a folder or index of PyTorch shards too.
TEST(Safetensors, NamesOtherWeightFormats) {
  const std::vector<std::pair<Bytes, std::string>> cases = {
      {{'P', 'K', 3, 4, 20, 0, 0, 0, 0, 0, 0, 0}, "a zip archive (PyTorch's torch.save"},
      {{0x80, 2, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8}, "a Python pickle"},
      {{0x80, 4, 0x95, 0x1b, 0x01, 0, 0, 0, 0, 0, 0, 0x8c}, "a Python pickle"},
      // a small frame's: a header length under the cap that runs past the end of the file
      {{0x80, 4, 0x95, 0x05, 0, 0, 0, 0, 0, 0, 0, 0x8c}, "a Python pickle"},
      {{'G', 'G', 'U', 'F', 3, 0, 0, 0, 1, 0, 0, 0}, "a GGUF file"},
      {{0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n', 0, 0, 0, 0}, "an HDF5 file"},
      {{0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, 0x76, 0, '{', '\''}, "a numpy .npy array"},
      {{'v', 'e', 'r', 's', 'i', 'o', 'n', ' ', 'h', 't', 't', 'p'}, "a Git LFS pointer, not the file itself"},
      {{'{', '\n', ' ', ' ', '"', 'm', 'e', 't', 'a', 'd', 'a', 't'}, "a JSON file, not safetensors (a sharded"},
      {{0xEF, 0xBB, 0xBF, '\n', '{', '"', 0xC3, 0xA9, 'x', 'y', 'z', 'w'}, "a JSON file, not safetensors (a sharded"},
  };
  test::TempDir dir;
  for (const auto& [bytes, expected] : cases) {
    Bytes padded = bytes;
    padded.resize(4096, 0);
    for (const bool streamed : {false, true}) {
      const std::string path = dir.file("weights.bin");
      std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(padded.data()), padded.size());
      try {
        if (streamed) SafetensorsReader reader(path);
        else parse_safetensors(padded, path);
        ADD_FAILURE() << expected << " was accepted";
      } catch (const Error& e) {
        const std::string message = e.what();
        EXPECT_NE(message.find(path + ": " + expected), std::string::npos) << message;
        EXPECT_NE(message.find("not safetensors"), std::string::npos) << message;
      }
    }
  }
  // Files shorter than a header length: a pickle of None (pickle.dumps(None, 2)) is still named,
  // anything else is too short.
  for (const auto& [bytes, expected] : std::vector<std::pair<Bytes, std::string>>{
           {{0x80, 2, 'N', '.'}, ": a Python pickle"}, {{'{', '}'}, ": too short for a safetensors header length (2 bytes)"}}) {
    const std::string path = dir.file("tiny.bin");
    std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    for (const bool streamed : {false, true}) {
      try {
        if (streamed) SafetensorsReader reader(path);
        else parse_safetensors(bytes, path);
        ADD_FAILURE() << expected << " was accepted";
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find(path + expected), std::string::npos) << e.what();
      }
    }
  }
  // A safetensors file whose header length is merely too large is still told so.
  Bytes huge(16, 0);
  huge[6] = 1;  // 2^48
  EXPECT_THROW(
      {
        try {
          parse_safetensors(huge, "big.safetensors");
        } catch (const Error& e) {
          EXPECT_NE(std::string(e.what()).find("exceeds the cap"), std::string::npos) << e.what();
          EXPECT_NE(std::string(e.what()).find("the file itself (16 bytes): not a safetensors file"), std::string::npos)
              << e.what();
          throw;
        }
      },
      Error);
}

TEST(Safetensors, RefusesFilesOverTheLimitAndMissingFiles) {
  test::TempDir dir;
  TensorFile file;
  file.tensors["w"] = f32_tensor({256}, std::vector<float>(256, 1.0f));
  write_safetensors(dir.file("m"), file);
  EXPECT_THROW(read_safetensors(dir.file("m"), 100), Error);
  EXPECT_THROW(read_safetensors(dir.file("absent")), Error);
}

// A header no reader would take (over kMaxSafetensorsHeader, the reference parser's cap) is refused
// before anything is written, by both writers (serialize_safetensors plans its header as
// write_safetensors does); one just under the cap is written.
TEST(Safetensors, AHeaderNoReaderWouldTakeIsNeverWritten) {
  test::TempDir dir;
  TensorFile file;
  file.tensors["w"] = f32_tensor({2}, {1.0f, 2.0f});
  file.metadata["x"] = std::string(kMaxSafetensorsHeader - 200, 'y');
  write_safetensors(dir.file("under"), file);
  EXPECT_LE(std::filesystem::file_size(dir.file("under")), 8 + kMaxSafetensorsHeader + 8);
  std::filesystem::remove(dir.file("under"));
  file.metadata["x"] = std::string(kMaxSafetensorsHeader, 'y');
  const auto refused = [&](const std::function<void()>& write, const std::string& where) {
    try {
      write();
      ADD_FAILURE() << where << ": written";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(where + ": the header would take"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("over the cap of 104857600 bytes"), std::string::npos) << e.what();
    }
  };
  refused([&] { write_safetensors(dir.file("over"), file); }, dir.file("over"));
  refused([&] { SafetensorsWriter writer(dir.file("streamed"), file.metadata, {{"w", TensorEntry{DType::F32, {2}}}}); },
          dir.file("streamed"));
  EXPECT_TRUE(std::filesystem::is_empty(dir.path()));  // no temporary either
}

// Every shape written is read again: up to kMaxRank (numpy's 32) dimensions both ways; one more is
// refused by the writer, naming the tensor, where it once wrote rank 9 that the reader refused.
TEST(Safetensors, ATensorOfEveryRankItWritesIsReadAgain) {
  test::TempDir dir;
  TensorFile file;
  file.tensors["nine"] = f32_tensor(std::vector<std::int64_t>(9, 1), {1.5f});
  file.tensors["most"] = f32_tensor(std::vector<std::int64_t>(kMaxRank, 1), {2.5f});
  write_safetensors(dir.file("ranks.safetensors"), file);
  const TensorFile read = read_safetensors(dir.file("ranks.safetensors"));
  EXPECT_EQ(read.tensors.at("nine").shape.size(), 9u);
  EXPECT_EQ(read.tensors.at("most").shape.size(), kMaxRank);
  EXPECT_EQ(to_floats(read.tensors.at("most"), "most"), std::vector<float>{2.5f});
  file.tensors["over"] = f32_tensor(std::vector<std::int64_t>(kMaxRank + 1, 1), {3.5f});
  try {
    write_safetensors(dir.file("over.safetensors"), file);
    ADD_FAILURE() << "a tensor of rank " << kMaxRank + 1 << " was written";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("tensor 'over' has 33 dimensions; a safetensors file holds at most 32"),
              std::string::npos) << e.what();
  }
  EXPECT_FALSE(std::filesystem::exists(dir.file("over.safetensors")));
}

TEST(Safetensors, WritingNeverLeavesAHalfFile) {
  test::TempDir dir;
  TensorFile good;
  good.tensors["w"] = f32_tensor({1}, {1.0f});
  write_safetensors(dir.file("m"), good);
  TensorFile bad;
  bad.tensors["w"] = f32_tensor({1}, {2.0f});
  bad.tensors["w"].shape = {5};  // inconsistent: refused before anything is written
  EXPECT_THROW(write_safetensors(dir.file("m"), bad), Error);
  EXPECT_EQ(to_floats(read_safetensors(dir.file("m")).tensors.at("w"), "w"), std::vector<float>{1.0f});
  std::size_t files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir.path())) files += entry.is_regular_file();
  EXPECT_EQ(files, 1u);  // no temporary left behind
}

}  // namespace
}  // namespace nuq::io
