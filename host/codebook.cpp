#include "nuq/codebook.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <utility>

#include <nlohmann/json.hpp>

#include "nuq/error.h"
#include "nuq/json_numbers.h"

namespace nuq {
namespace {

template <typename Enum>
struct NamedValue {
  Enum value;
  const char* name;
};

constexpr std::array<NamedValue<Method>, 7> kMethodNames{{
    {Method::Uniform, "uniform"},
    {Method::Sptq, "sptq"},
    {Method::Msptq, "msptq"},
    {Method::Ternary, "ternary"},
    {Method::MuLaw, "mulaw"},
    {Method::LloydMax, "lloyd-max"},
    {Method::Custom, "custom"},
}};

constexpr std::array<NamedValue<XmaxRule>, 4> kRuleNames{{
    {XmaxRule::Given, "given"},
    {XmaxRule::Iterative, "iterative"},
    {XmaxRule::Numeric, "numeric"},
    {XmaxRule::Lloyd, "lloyd"},
}};

template <typename Enum, std::size_t N>
std::string name_of(const std::array<NamedValue<Enum>, N>& table, Enum value) {
  for (const auto& entry : table)
    if (entry.value == value) return entry.name;
  NUQ_ASSERT(false, "enum value without a name");
}

template <typename Enum, std::size_t N>
Enum parse(const std::array<NamedValue<Enum>, N>& table, const std::string& name, const char* what) {
  std::string choices;
  for (const auto& entry : table) {
    if (name == entry.name) return entry.value;
    choices += choices.empty() ? "" : ", ";
    choices += entry.name;
  }
  throw Error("unknown " + std::string(what) + " '" + name + "' (choose one of: " + choices + ")");
}

void require_strictly_increasing_finite(const std::vector<double>& values, const char* what) {
  for (std::size_t i = 0; i < values.size(); ++i) {
    NUQ_REQUIRE(std::isfinite(values[i]), "codebook: ", what, "[", i, "] is not finite");
    NUQ_REQUIRE(i == 0 || values[i - 1] < values[i], "codebook: ", what,
                " must be strictly increasing, but [", i - 1, "] = ", values[i - 1], " >= [", i,
                "] = ", values[i]);
  }
}

// A codebook's fields, each named in the error when missing or not what it must be.
const nlohmann::json& field(const nlohmann::json& j, const char* key) {
  NUQ_REQUIRE(j.is_object(), "codebook JSON: not an object");
  const auto it = j.find(key);
  NUQ_REQUIRE(it != j.end(), "codebook JSON: no '", key, "'");
  return *it;
}

std::int64_t integer_field(const nlohmann::json& j, const char* key, std::int64_t lowest, std::int64_t highest) {
  const nlohmann::json& value = field(j, key);
  const std::optional<std::int64_t> n = json_integer(value);
  NUQ_REQUIRE(n && *n >= lowest && *n <= highest, "codebook JSON: '", key, "' must be a whole number in ", lowest,
              "..", highest, ", got ", value.dump());
  return *n;
}

// A finite number of at least `lowest` (and at most `highest`, where one is given).
double number_field(const nlohmann::json& j, const char* key, double lowest,
                    double highest = std::numeric_limits<double>::max()) {
  const nlohmann::json& value = field(j, key);
  NUQ_REQUIRE(value.is_number() && std::isfinite(value.get<double>()), "codebook JSON: '", key,
              "' must be a finite number, got ", value.dump());
  const double x = value.get<double>();
  NUQ_REQUIRE(x >= lowest, "codebook JSON: '", key, "' must be at least ", lowest, ", got ", value.dump());
  NUQ_REQUIRE(x <= highest, "codebook JSON: '", key, "' must be at most ", highest, ", got ", value.dump());
  return x;
}

std::string text_field(const nlohmann::json& j, const char* key) {
  const nlohmann::json& value = field(j, key);
  NUQ_REQUIRE(value.is_string(), "codebook JSON: '", key, "' must be a string, got ", value.dump());
  return value.get<std::string>();
}

std::vector<double> numbers_field(const nlohmann::json& j, const char* key) {
  const nlohmann::json& value = field(j, key);
  NUQ_REQUIRE(value.is_array(), "codebook JSON: '", key, "' must be a list of numbers");
  std::vector<double> numbers;
  for (const nlohmann::json& x : value) {
    NUQ_REQUIRE(x.is_number(), "codebook JSON: '", key, "' must be a list of numbers, holds ", x.dump());
    numbers.push_back(x.get<double>());
  }
  return numbers;
}

}  // namespace

std::string to_string(Method method) { return name_of(kMethodNames, method); }
std::string to_string(XmaxRule rule) { return name_of(kRuleNames, rule); }
Method parse_method(const std::string& name) { return parse(kMethodNames, name, "method"); }
XmaxRule parse_xmax_rule(const std::string& name) { return parse(kRuleNames, name, "x_max rule"); }

Codebook::Codebook(int bits, std::vector<double> thresholds, std::vector<double> levels,
                   Provenance provenance, std::optional<UniformGrid> grid)
    : bits_(bits),
      thresholds_(std::move(thresholds)),
      levels_(std::move(levels)),
      provenance_(std::move(provenance)),
      grid_(grid) {
  NUQ_REQUIRE(bits_ >= 1 && bits_ <= 16, "codebook: bits must be in 1..16, got ", bits_);
  NUQ_REQUIRE(levels_.size() >= 2, "codebook: needs at least 2 levels, got ", levels_.size());
  NUQ_REQUIRE(levels_.size() <= (std::size_t{1} << bits_), "codebook: ", levels_.size(),
              " levels do not fit in ", bits_, " bits");
  NUQ_REQUIRE(thresholds_.size() + 1 == levels_.size(), "codebook: ", levels_.size(),
              " levels need ", levels_.size() - 1, " thresholds, got ", thresholds_.size());
  require_strictly_increasing_finite(thresholds_, "thresholds");
  require_strictly_increasing_finite(levels_, "levels");
  NUQ_REQUIRE(std::isfinite(provenance_.xmax) && provenance_.xmax >= 0.0,
              "codebook: x_max must be finite and non-negative, got ", provenance_.xmax);
  NUQ_REQUIRE(std::isfinite(provenance_.sigma) && provenance_.sigma > 0.0,
              "codebook: sigma must be finite and positive, got ", provenance_.sigma);
  if (grid_) {
    NUQ_REQUIRE(grid_->step > 0.0 && std::isfinite(grid_->step) && std::isfinite(grid_->first_level),
                "codebook: uniform grid step must be finite and positive");
    const double tolerance = 1e-9 * grid_->step * static_cast<double>(levels_.size());
    for (std::size_t k = 0; k < levels_.size(); ++k)
      NUQ_REQUIRE(std::abs(levels_[k] - (grid_->first_level + k * grid_->step)) <= tolerance,
                  "codebook: level ", k, " is off the declared uniform grid");
  }
}

Codebook Codebook::symmetric(int bits, const std::vector<double>& positive_thresholds,
                             const std::vector<double>& positive_levels, bool midtread,
                             Provenance provenance, std::optional<UniformGrid> grid) {
  std::vector<double> thresholds, levels;
  for (auto it = positive_thresholds.rbegin(); it != positive_thresholds.rend(); ++it)
    thresholds.push_back(-*it);
  if (!midtread) thresholds.push_back(0.0);
  thresholds.insert(thresholds.end(), positive_thresholds.begin(), positive_thresholds.end());
  for (auto it = positive_levels.rbegin(); it != positive_levels.rend(); ++it) levels.push_back(-*it);
  if (midtread) levels.push_back(0.0);
  levels.insert(levels.end(), positive_levels.begin(), positive_levels.end());
  return Codebook(bits, std::move(thresholds), std::move(levels), std::move(provenance), grid);
}

bool Codebook::symmetric() const {
  auto mirrored = [](const std::vector<double>& v) {
    const double scale = std::max(std::abs(v.front()), std::abs(v.back()));
    for (std::size_t i = 0, j = v.size() - 1; i < v.size(); ++i, --j)
      if (std::abs(v[i] + v[j]) > 1e-12 * scale) return false;
    return true;
  };
  return mirrored(thresholds_) && mirrored(levels_);
}

Codebook Codebook::scaled(double factor) const {
  NUQ_REQUIRE(std::isfinite(factor) && factor > 0.0, "codebook: scale factor must be positive, got ",
              factor);
  auto times = [factor](std::vector<double> v) {
    for (double& x : v) x *= factor;
    return v;
  };
  Provenance provenance = provenance_;
  provenance.xmax *= factor;
  provenance.sigma *= factor;
  std::optional<UniformGrid> grid = grid_;
  if (grid) grid = UniformGrid{grid->first_level * factor, grid->step * factor};
  return Codebook(bits_, times(thresholds_), times(levels_), provenance, grid);
}

std::uint32_t Codebook::index_of(double x) const {
  NUQ_REQUIRE(!std::isnan(x), "codebook: cannot quantize NaN");
  return static_cast<std::uint32_t>(std::upper_bound(thresholds_.begin(), thresholds_.end(), x) -
                                    thresholds_.begin());
}

nlohmann::json to_json(const Codebook& codebook) {
  const Provenance& p = codebook.provenance();
  nlohmann::json j = {
      {"method", to_string(p.method)},
      {"bits", codebook.bits()},
      {"levels_count", codebook.size()},
      {"xmax", p.xmax},
      {"xmax_rule", to_string(p.rule)},
      {"sigma", p.sigma},
      {"iterations", p.iterations},
      {"symmetric", codebook.symmetric()},
      {"thresholds", codebook.thresholds()},
      {"levels", codebook.levels()},
  };
  if (p.mu) j["mu"] = *p.mu;
  if (p.alpha) j["alpha"] = *p.alpha;
  if (const auto& grid = codebook.uniform_grid())
    j["uniform_grid"] = {{"first_level", grid->first_level}, {"step", grid->step}};
  return j;
}

Provenance provenance_from_json(const nlohmann::json& j) {
  Provenance p;
  p.method = parse_method(text_field(j, "method"));
  // How x_max was found, for which sigma and in how many iterations only describe the design: a
  // record without them (a peer's file, docs/format.md) reads as a given x_max for unit variance.
  p.rule = j.contains("xmax_rule") ? parse_xmax_rule(text_field(j, "xmax_rule")) : XmaxRule::Given;
  p.xmax = number_field(j, "xmax", 0.0);
  p.sigma = j.contains("sigma") ? number_field(j, "sigma", kMinSigma, kMaxSigma) : 1.0;
  // Its distortion is taken over the support: one past the design's bound overflows it.
  NUQ_REQUIRE(p.xmax / p.sigma <= kMaxStandardDeviations, "codebook JSON: 'xmax' ", j.at("xmax").dump(), " is ",
              p.xmax / p.sigma, " standard deviations (sigma ", j.contains("sigma") ? j.at("sigma").dump() : "1: absent",
              "); at most ", kMaxStandardDeviations, " make sense");
  p.iterations = j.contains("iterations") ? int(integer_field(j, "iterations", 0, INT32_MAX)) : 0;
  if (j.contains("mu")) p.mu = number_field(j, "mu", 0.0);
  if (j.contains("alpha")) p.alpha = number_field(j, "alpha", 0.0);
  return p;
}

Codebook codebook_from_json(const nlohmann::json& j) {
  const Provenance p = provenance_from_json(j);
  std::optional<UniformGrid> grid;
  if (j.contains("uniform_grid")) {
    const nlohmann::json& g = field(j, "uniform_grid");
    NUQ_REQUIRE(g.is_object(), "codebook JSON: 'uniform_grid' must be an object {\"first_level\": ..., \"step\": ...}, got ",
                g.dump());
    grid = UniformGrid{number_field(g, "first_level", std::numeric_limits<double>::lowest()),
                       number_field(g, "step", 0.0)};
  }
  const int bits = int(integer_field(j, "bits", 1, 16));
  const std::vector<double> levels = numbers_field(j, "levels");
  if (j.contains("levels_count"))
    NUQ_REQUIRE(integer_field(j, "levels_count", 2, 65536) == std::int64_t(levels.size()), "codebook JSON: levels_count ",
                j.at("levels_count").dump(), " but ", levels.size(), " levels are listed");
  Codebook codebook(bits, numbers_field(j, "thresholds"), levels, p, grid);
  // Derived, not read; but a document that states it wrongly is not the codebook it claims to be.
  if (j.contains("symmetric"))
    NUQ_REQUIRE(j.at("symmetric").is_boolean() && j.at("symmetric").get<bool>() == codebook.symmetric(),
                "codebook JSON: 'symmetric' is ", j.at("symmetric").dump(), " but the levels and thresholds ",
                codebook.symmetric() ? "are" : "are not", " symmetric about 0");
  return codebook;
}

}  // namespace nuq
