# Warning flags for every target of the project (DESIGN B.13). -Werror only
# when asked (CI sets QCHAIN_WERROR=ON).
set(QCHAIN_WARNINGS -Wall -Wextra -Wshadow -Wformat=2 -Wvla -Wstrict-prototypes
    -Wmissing-prototypes -Wpointer-arith -Wundef)
if(QCHAIN_WERROR)
  list(APPEND QCHAIN_WARNINGS -Werror)
endif()
add_compile_options(${QCHAIN_WARNINGS})
add_compile_definitions(_GNU_SOURCE _FILE_OFFSET_BITS=64)
