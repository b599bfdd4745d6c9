// An app pod of seeds 003/004's kind on the AWS SDK v3: it stores objects
// through the in-cluster endpoint (AWS_ENDPOINT_URL_S3, AWS_REGION and the keys:
// the SDK reads those variables itself; path style it has no variable for) and
// hands browsers a presigned POST (size limit from the binding) and a presigned
// GET, signed for the public endpoint so the URLs name the host browsers reach.
import { GetObjectCommand, PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { createPresignedPost } from "@aws-sdk/s3-presigned-post";
import { getSignedUrl } from "@aws-sdk/s3-request-presigner";
import { args, counter, done, need } from "./common.ts";

const report = counter(args().pod);
const forcePathStyle = process.env.S3_FORCE_PATH_STYLE === "true";
const s3 = new S3Client({ forcePathStyle });
const browser = new S3Client({ endpoint: need("S3_PUBLIC_ENDPOINT"), forcePathStyle });
const Bucket = need("S3_BUCKET");
const max = Number(need("S3_MAX_UPLOAD_BYTES"));
let post: unknown = null;
let getUrl = "";
try {
  await s3.send(new PutObjectCommand({ Bucket, Key: "from-app.txt", Body: "stored by the app" }));
  const got = await s3.send(new GetObjectCommand({ Bucket, Key: "from-app.txt" }));
  if ((await got.Body?.transformToString()) !== "stored by the app") throw new Error("read back differs");
  report.queries += 1;
  post = await createPresignedPost(browser, {
    Bucket,
    Key: "uploads/photo.jpg",
    Conditions: [["content-length-range", 0, max]],
    Expires: 600,
  });
  getUrl = await getSignedUrl(browser, new GetObjectCommand({ Bucket, Key: "from-app.txt" }), {
    expiresIn: 600,
  });
} catch (err) {
  report.fail(err);
}
process.stdout.write(`PRESIGNED ${JSON.stringify({ post, getUrl })}\n`);
done(report);
