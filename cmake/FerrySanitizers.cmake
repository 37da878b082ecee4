# FERRY_SANITIZE applies to every target in the build (library, tests, tools)
# so that instrumented and uninstrumented code never mix. Debug info comes from
# the build type (CI uses -g1: line tables are all a sanitizer report needs).
if(FERRY_SANITIZE)
  if(NOT FERRY_SANITIZE MATCHES "^(address,undefined|address|undefined|thread)$")
    message(FATAL_ERROR "FERRY_SANITIZE must be 'address,undefined' or 'thread', not '${FERRY_SANITIZE}'")
  endif()
  add_compile_options(-fsanitize=${FERRY_SANITIZE} -fno-omit-frame-pointer)
  add_link_options(-fsanitize=${FERRY_SANITIZE})
  if(FERRY_SANITIZE MATCHES "undefined")
    add_compile_options(-fno-sanitize-recover=undefined)
  endif()
endif()
