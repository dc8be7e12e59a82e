/* The JDK's own HTTP server (com.sun.net.httpserver) with a fixed pool of 4 worker threads: per
 * POST /pay a worker takes a sequence number (AtomicLong), the time (System.currentTimeMillis),
 * an id from SecureRandom (/dev/urandom), appends a journal line and syncs it under a lock, and
 * replies. Prints "ready", serves N requests, prints "served N" and exits (System.exit).
 *
 *   java HttpLedger PORT JOURNAL N */
import com.sun.net.httpserver.*;
import java.io.*;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.security.SecureRandom;
import java.util.concurrent.*;
import java.util.concurrent.atomic.AtomicLong;

public class HttpLedger {
    public static void main(String[] a) throws Exception {
        int port = Integer.parseInt(a[0]); String journal = a[1]; int n = Integer.parseInt(a[2]);
        FileOutputStream out = new FileOutputStream(journal, true);
        SecureRandom rnd = new SecureRandom();
        AtomicLong seq = new AtomicLong();
        CountDownLatch done = new CountDownLatch(n);
        HttpServer srv = HttpServer.create(new InetSocketAddress("127.0.0.1", port), 16);
        srv.setExecutor(Executors.newFixedThreadPool(4));
        srv.createContext("/pay", ex -> {
            byte[] body = ex.getRequestBody().readAllBytes();
            long s = seq.incrementAndGet();
            String line = s + " " + System.currentTimeMillis() + " " + Thread.currentThread().getName() + " "
                + new String(body, StandardCharsets.US_ASCII) + " id=" + Long.toHexString(rnd.nextLong()) + "\n";
            synchronized (out) { out.write(line.getBytes(StandardCharsets.US_ASCII)); out.getFD().sync(); }
            byte[] reply = ("ok " + s + "\n").getBytes(StandardCharsets.US_ASCII);
            ex.sendResponseHeaders(200, reply.length);
            ex.getResponseBody().write(reply); ex.close();
            done.countDown();
        });
        srv.start();
        System.out.println("ready"); System.out.flush();
        done.await();
        srv.stop(0);
        System.out.println("served " + n);
        System.exit(0);
    }
}
