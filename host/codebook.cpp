#include "nuq/codebook.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <utility>

#include <nlohmann/json.hpp>

#include "nuq/error.h"

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
  try {
    Provenance p;
    p.method = parse_method(j.at("method").get<std::string>());
    p.rule = parse_xmax_rule(j.at("xmax_rule").get<std::string>());
    p.xmax = j.at("xmax").get<double>();
    p.sigma = j.at("sigma").get<double>();
    p.iterations = j.at("iterations").get<int>();
    if (j.contains("mu")) p.mu = j.at("mu").get<double>();
    if (j.contains("alpha")) p.alpha = j.at("alpha").get<double>();
    return p;
  } catch (const nlohmann::json::exception& e) {
    throw Error(std::string("codebook JSON: ") + e.what());
  }
}

Codebook codebook_from_json(const nlohmann::json& j) {
  try {
    const Provenance p = provenance_from_json(j);
    std::optional<UniformGrid> grid;
    if (j.contains("uniform_grid"))
      grid = UniformGrid{j.at("uniform_grid").at("first_level").get<double>(),
                         j.at("uniform_grid").at("step").get<double>()};
    return Codebook(j.at("bits").get<int>(), j.at("thresholds").get<std::vector<double>>(),
                    j.at("levels").get<std::vector<double>>(), p, grid);
  } catch (const nlohmann::json::exception& e) {
    throw Error(std::string("codebook JSON: ") + e.what());
  }
}

}  // namespace nuq
