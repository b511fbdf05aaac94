// Whether this test binary is built with AddressSanitizer (GCC defines __SANITIZE_ADDRESS__; clang
// 14 answers only __has_feature) or ThreadSanitizer: tests of address-space limits and of thread
// counts behave differently under them.
#pragma once

#if defined(__has_feature)
#define NUQ_TEST_HAS_FEATURE(feature) __has_feature(feature)
#else
#define NUQ_TEST_HAS_FEATURE(feature) 0
#endif

namespace nuq::test {

#if defined(__SANITIZE_ADDRESS__) || NUQ_TEST_HAS_FEATURE(address_sanitizer)
constexpr bool kAddressSanitizer = true;
#else
constexpr bool kAddressSanitizer = false;
#endif

#if defined(__SANITIZE_THREAD__) || NUQ_TEST_HAS_FEATURE(thread_sanitizer)
constexpr bool kThreadSanitizer = true;
#else
constexpr bool kThreadSanitizer = false;
#endif

}  // namespace nuq::test
