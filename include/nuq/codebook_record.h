// A codebook as a quantized file's header records it (docs/format.md, "codebook"): its thresholds
// and levels listed, or, past 256 levels, a uniform, mu-law or Lloyd-Max design of unit variance by
// its parameters alone where the function that designed it rebuilds it bit for bit (a 16-bit
// design's 131,071 numbers would otherwise put megabytes of JSON in the header of every file).
#pragma once

#include <nlohmann/json.hpp>

#include "nuq/codebook.h"

namespace nuq {

// The record of `codebook`: in full up to 256 levels; a larger design by its parameters when they
// rebuild it exactly, in full otherwise.
nlohmann::json codebook_record(const Codebook& codebook);

// The codebook a record describes: its listed levels, or the design its parameters rebuild.
// Validates as codebook_from_json; a record that is neither throws nuq::Error saying why.
Codebook codebook_from_record(const nlohmann::json& j);

}  // namespace nuq
