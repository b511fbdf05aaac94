// Numbers as the CLI's tables and the reports print them: fixed decimals, NaN and infinities
// spelled out, and signed differences without a "-0.00".
#pragma once

#include <string>

namespace nuq {

// fixed_text(6.97903, 4) == "6.9790"; "nan", "inf", "-inf"; from 1e15 on in scientific notation,
// fixed_text(1e100, 4) == "1e+100".
std::string fixed_text(double value, int decimals);
// significant_text(0.000123456789, 6) == "0.000123457", significant_text(4.2e29, 6) == "4.2e+29":
// for quantities of any magnitude (a tensor's RMSE at sigma 1e-12 or 1e12); "nan", "inf", "-inf".
std::string significant_text(double value, int digits);
// signed_text(0.5, 2) == "+0.50", signed_text(-1e-9, 2) == "+0.00" (a zero is never negative).
std::string signed_text(double value, int decimals);

}  // namespace nuq
