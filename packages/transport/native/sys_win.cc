// Windows implementation of sys.h lives here (Winsock + afunix.h).
#ifdef _WIN32
#error "sys_win.cc: not written yet"
#endif
