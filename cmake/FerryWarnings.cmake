# Warnings are errors in ferry's own targets only; they never leak into the
# usage requirements of the installed package.
function(ferry_set_warnings target)
  # g++ 12 flags C++20 designated initializers that leave fields at their
  # defaults ({.size = 64}); that is how ferry's options are meant to be used.
  target_compile_options(${target} PRIVATE -Wall -Wextra -Werror -Wshadow -Wconversion
                                           -Wno-sign-conversion -Wno-missing-field-initializers)
  if(FERRY_SANITIZE MATCHES "thread" AND CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
    # g++ 12 warns that TSan does not model atomic_thread_fence; ferry's
    # shared-memory code uses acquire/release on the atomics themselves.
    target_compile_options(${target} PRIVATE -Wno-tsan)
  endif()
endfunction()
