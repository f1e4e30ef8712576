/* Preloaded (LD_PRELOAD) into a trainer whose workers all run on this machine, by
   trainer/loopback.py.

   TensorFlow's gRPC server (what MultiWorkerMirroredStrategy's workers talk through) always
   listens on the wildcard address, "0.0.0.0:<port>" in grpc_server_lib.cc, which gRPC opens as
   a dual-stack [::] socket; no ServerDef field, ClusterSpec entry or environment variable
   changes that, and the service has no authentication. So this turns a wildcard bind() to the
   one address named in FINETUNE_LOOPBACK_BIND ("127.0.0.1:2222": this worker's own address)
   into a bind to that address (IPv4-mapped on an IPv6 socket); every other bind() is left as
   it is. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

typedef int (*bind_fn)(int, const struct sockaddr *, socklen_t);

/* The address to bind instead of the wildcard, and its port; 0 when none is named. */
static int wanted(struct in_addr *host) {
  const char *text = getenv("FINETUNE_LOOPBACK_BIND");
  char buffer[64];
  if (text == NULL || strlen(text) >= sizeof buffer) return 0;
  strcpy(buffer, text);
  char *colon = strrchr(buffer, ':');
  if (colon == NULL) return 0;
  *colon = '\0';
  if (inet_pton(AF_INET, buffer, host) != 1) return 0;
  int port = atoi(colon + 1);
  return port > 0 && port < 65536 ? port : 0;
}

int bind(int fd, const struct sockaddr *addr, socklen_t len) {
  static bind_fn real = NULL;
  if (real == NULL) real = (bind_fn)dlsym(RTLD_NEXT, "bind");
  struct in_addr host;
  int port = addr == NULL ? 0 : wanted(&host);
  if (port && addr->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
    struct sockaddr_in in4;
    memcpy(&in4, addr, sizeof in4);
    if (in4.sin_addr.s_addr == htonl(INADDR_ANY) && ntohs(in4.sin_port) == port) {
      in4.sin_addr = host;
      return real(fd, (const struct sockaddr *)&in4, sizeof in4);
    }
  } else if (port && addr->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
    struct sockaddr_in6 in6;
    memcpy(&in6, addr, sizeof in6);
    if (IN6_IS_ADDR_UNSPECIFIED(&in6.sin6_addr) && ntohs(in6.sin6_port) == port) {
      memset(&in6.sin6_addr, 0, sizeof in6.sin6_addr);
      in6.sin6_addr.s6_addr[10] = 0xff; /* ::ffff:a.b.c.d: the peers dial the IPv4 address */
      in6.sin6_addr.s6_addr[11] = 0xff;
      memcpy(&in6.sin6_addr.s6_addr[12], &host, 4);
      return real(fd, (const struct sockaddr *)&in6, sizeof in6);
    }
  }
  return real(fd, addr, len);
}
