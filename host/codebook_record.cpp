#include "nuq/codebook_record.h"

#include <cstdint>
#include <mutex>
#include <optional>

#include "nuq/design.h"
#include "nuq/error.h"
#include "nuq/json_numbers.h"
#include "nuq/lloyd_max.h"
#include "nuq/uniform.h"

namespace nuq {
namespace {

// Up to this many levels a codebook's thresholds and levels are written out in the header.
constexpr std::size_t kListedLevels = 256;

// Lloyd-Max's codebook of `levels` levels: the same each time (an iteration from a fixed start),
// and 40 ms at 65,536 levels, so the last one is kept for the files of a run that read it again.
Codebook lloyd_max_levels(std::size_t levels) {
  static std::mutex mutex;
  static std::optional<Codebook> last;
  const std::lock_guard<std::mutex> lock(mutex);
  if (!last || last->size() != levels) last = lloyd_max_codebook(levels);
  return *last;
}

// A uniform, mu-law or Lloyd-Max codebook rebuilt from its recorded parameters (the functions that
// designed it, so the result is the same bit for bit: codebook_record checks that before it relies
// on it), or nothing when the design is not of those kinds.
std::optional<Codebook> rebuilt_from_parameters(const nlohmann::json& recorded) {
  // A Lloyd-Max design is its number of levels alone (docs/format.md): without a recorded x_max it
  // takes the design's own, set below.
  const bool lloyd_max = recorded.contains("method") && recorded.at("method") == to_string(Method::LloydMax);
  nlohmann::json j = recorded;
  if (lloyd_max && !j.contains("xmax") && !j.contains("levels")) j["xmax"] = 0.0;
  Provenance p = provenance_from_json(j);
  const bool uniform = p.method == Method::Uniform || p.method == Method::Ternary;
  const bool by_formula = uniform || (p.method == Method::MuLaw && p.mu) || p.method == Method::LloydMax;
  if (!by_formula || p.sigma != 1.0) return std::nullopt;
  const std::optional<std::int64_t> count = j.contains("levels_count") ? json_integer(j.at("levels_count")) : std::nullopt;
  NUQ_REQUIRE(count && *count >= 2 && *count <= 65536, "the ", to_string(p.method), " codebook's levels_count must be "
              "a whole number in 2..65536");
  // A uniform design's width follows from its levels_count; where it is written it must hold them.
  const std::int64_t bits = j.contains("bits") ? json_integer(j.at("bits")).value_or(0) : 0;  // 0: none, or not whole
  NUQ_REQUIRE((uniform && !j.contains("bits")) || (bits >= 1 && bits <= 16 && *count <= (std::int64_t{1} << bits)),
              "the ", to_string(p.method), " codebook's bits ", j.value("bits", nlohmann::json()).dump(),
              " do not hold its ", *count, " levels");
  if (uniform) return uniform_codebook(std::size_t(*count), p.xmax, p);
  if (p.method == Method::LloydMax) {
    const Codebook designed = lloyd_max_levels(std::size_t(*count));
    if (!recorded.contains("xmax")) p.xmax = designed.provenance().xmax;
    if (!recorded.contains("xmax_rule")) p.rule = designed.provenance().rule;
    if (!recorded.contains("iterations")) p.iterations = designed.provenance().iterations;
    return Codebook(int(bits), designed.thresholds(), designed.levels(), p);
  }
  DesignSpec spec;
  spec.method = Method::MuLaw;
  spec.bits = int(bits);
  spec.levels = std::size_t(*count);
  spec.mu = *p.mu;
  const Codebook designed = codebook_at_xmax(spec, p.xmax);
  return Codebook(designed.bits(), designed.thresholds(), designed.levels(), p, designed.uniform_grid());
}

}  // namespace

nlohmann::json codebook_record(const Codebook& codebook) {
  nlohmann::json j = to_json(codebook);
  if (codebook.size() <= kListedLevels) return j;
  const std::optional<Codebook> rebuilt = rebuilt_from_parameters(j);
  if (rebuilt && rebuilt->bits() == codebook.bits() && rebuilt->levels() == codebook.levels() &&
      rebuilt->thresholds() == codebook.thresholds()) {
    j.erase("thresholds");
    j.erase("levels");
  }
  return j;
}

Codebook codebook_from_record(const nlohmann::json& j) {
  if (j.contains("levels")) return codebook_from_json(j);
  const std::optional<Codebook> rebuilt = rebuilt_from_parameters(j);
  NUQ_REQUIRE(rebuilt, "the codebook lists no levels and is not a uniform, mu-law or Lloyd-Max design of unit variance that its parameters rebuild");
  // codebook_record leaves out the levels only where the rebuilt codebook has the recorded width:
  // a record of another is not one nuq wrote (a mu-law of 3 levels said to be 12 bits wide).
  NUQ_REQUIRE(!j.contains("bits") || j.at("bits") == rebuilt->bits(), "the ", j.value("method", std::string()),
              " codebook's bits ", j.at("bits").dump(), " are not the width its ", rebuilt->size(),
              " levels are rebuilt at (", rebuilt->bits(), ")");
  return *rebuilt;
}

}  // namespace nuq
