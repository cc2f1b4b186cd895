/*
 * openssl_fork_reset.c: LD_PRELOAD shim for Kamailio 5.6 with OpenSSL 3.
 *
 * Kamailio initialises OpenSSL in its main process, with OpenSSL's
 * allocations in shared memory, then forks its workers. OpenSSL 3 keeps
 * per-thread state (the error queue, the per-thread DRBGs) behind
 * thread-local pointers; every worker inherits the main process's
 * pointers to the same shared-memory blocks, uses them concurrently and
 * frees them more than once: the crash under a TLS handshake flood of
 * upstream issues kamailio#3635 and kamailio#3791 ("freeing already freed
 * pointer ... tls_init.c: ser_free"). Kamailio 5.7.2+/5.8 fix it with the
 * core parameter tls_threads_mode, which 5.6 (Debian 12) does not have.
 *
 * This shim registers a pthread_atfork "prepare" handler that calls
 * OPENSSL_thread_stop() in the parent just before each fork: the parent's
 * per-thread state is released and its thread-local pointers cleared, so
 * each child creates its own state on first use. libcrypto is looked up
 * only if already loaded (the tls module loads it); nothing else changes.
 *
 * Build: gcc -shared -fPIC -O2 -o openssl_fork_reset.so openssl_fork_reset.c -ldl
 * Use:   LD_PRELOAD=/path/openssl_fork_reset.so kamailio ...
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stddef.h>

static void reset_openssl_thread_state(void)
{
	void *crypto = dlopen("libcrypto.so.3", RTLD_NOW | RTLD_NOLOAD);
	if (crypto == NULL)
		return;
	void (*stop)(void) = (void (*)(void))dlsym(crypto, "OPENSSL_thread_stop");
	if (stop != NULL)
		stop();
	dlclose(crypto);
}

__attribute__((constructor)) static void openssl_fork_reset_init(void)
{
	pthread_atfork(reset_openssl_thread_state, NULL, NULL);
}
