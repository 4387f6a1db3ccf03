/* Preloaded into every Pod process of kubelet-standin (see network.rs): an IPv4 bind to the wildcard
 * address becomes a bind to the Pod's own loopback address, $KUBELET_STANDIN_POD_IP. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

int bind(int fd, const struct sockaddr *addr, socklen_t len) {
    static int (*real_bind)(int, const struct sockaddr *, socklen_t);
    if (!real_bind) real_bind = (int (*)(int, const struct sockaddr *, socklen_t))dlsym(RTLD_NEXT, "bind");
    const char *pod_ip = getenv("KUBELET_STANDIN_POD_IP");
    if (pod_ip && addr && addr->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        struct sockaddr_in moved;
        memcpy(&moved, addr, sizeof moved);
        if (moved.sin_addr.s_addr == htonl(INADDR_ANY) && inet_pton(AF_INET, pod_ip, &moved.sin_addr) == 1) {
            return real_bind(fd, (const struct sockaddr *)&moved, sizeof moved);
        }
    }
    return real_bind(fd, addr, len);
}
